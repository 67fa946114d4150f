//! The embedded backend: one SQLite file (WAL, `synchronous=FULL`, `secure_delete=ON` so erased
//! rows are overwritten on disk, not just unlinked) holding facts, their vectors per embedding
//! model, the pinned model and the semantic catalogue versions; plus in-memory [`VectorIndex`]es,
//! rebuilt from the file at open, one per tenant and retrieval scope: the tenant-wide facts
//! (semantic, or episodic scoped `tenant`) and each subject's episodic facts. An index holds only
//! one tenant's vectors, so a search cannot reach another tenant's facts even before the SQL
//! filter; and a search for a subject reads the tenant-wide index and that subject's, so a subject
//! with three facts in a tenant of a million is found without walking the million. Episodic facts
//! about no one named are retrieved by nobody, so no index holds them.

use crate::error::MemoryError;
use crate::fact::{EmbeddingModel, Fact, Scope, Status, Swept, Tier};
use crate::index::VectorIndex;
use crate::store::{CatalogueVersion, MemoryStore, check_dim, check_model, retrievable};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The embedded memory store.
pub struct SqliteMemory {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    conn: Connection,
    pinned: EmbeddingModel,
    indexes: HashMap<Partition, VectorIndex>,
}

/// Which in-memory index a fact's vector lives in: its tenant, and its subject for subject-scoped
/// episodic facts (`None`: the tenant-wide index).
type Partition = (String, Option<String>);

/// The partition of a fact with these stored columns; `None` for a fact no search can return
/// (episodic, subject-scoped, about no one).
fn partition_of(
    tenant: &str,
    tier: &str,
    subject: Option<&str>,
    scope: Option<&str>,
) -> Option<Partition> {
    if tier == Tier::Semantic.as_str() || scope == Some(Scope::Tenant.as_str()) {
        return Some((tenant.to_owned(), None));
    }
    subject.map(|s| (tenant.to_owned(), Some(s.to_owned())))
}

fn partition(f: &Fact) -> Option<Partition> {
    partition_of(
        &f.tenant,
        f.tier.as_str(),
        f.subject.as_deref(),
        Some(f.scope.as_str()),
    )
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS facts (
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, subject TEXT, tier TEXT NOT NULL,
  status TEXT NOT NULL, sem_from INTEGER, sem_to INTEGER, expires_ms INTEGER, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS facts_by_subject ON facts (tenant, subject);
CREATE INDEX IF NOT EXISTS facts_by_expiry ON facts (expires_ms);
CREATE TABLE IF NOT EXISTS vectors (
  model TEXT NOT NULL, fact_id TEXT NOT NULL, tenant TEXT NOT NULL, vec BLOB NOT NULL,
  PRIMARY KEY (model, fact_id));
CREATE TABLE IF NOT EXISTS catalogue (tenant TEXT PRIMARY KEY, version INTEGER NOT NULL);
";

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn decode(doc: &str) -> Result<Fact, MemoryError> {
    serde_json::from_str(doc).map_err(|e| MemoryError::Corrupt {
        what: "fact document".into(),
        detail: e.to_string(),
    })
}

fn encode(f: &Fact) -> String {
    serde_json::to_string(f).unwrap_or_default()
}

impl SqliteMemory {
    /// Opens (or creates) the store at `path`. A new store is pinned to `model`; an existing one
    /// keeps its pinned model (queries with another model are then refused).
    pub fn open(path: impl AsRef<Path>, model: &EmbeddingModel) -> Result<Self, MemoryError> {
        let path = path.as_ref().to_path_buf();
        let e = |context| {
            let p = path.display().to_string();
            move |source| MemoryError::Sqlite {
                path: p,
                context,
                source,
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|err| {
                MemoryError::Invalid(format!(
                    "memory store {}: creating {}: {err}",
                    path.display(),
                    dir.display()
                ))
            })?;
        }
        let conn = Connection::open(&path).map_err(e("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(e("journal_mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(e("synchronous"))?;
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(e("secure_delete"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(e("busy_timeout"))?;
        conn.execute_batch(SCHEMA).map_err(e("schema"))?;
        let pinned: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'pinned'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(e("read pinned model"))?;
        let pinned = match pinned {
            Some(json) => serde_json::from_str(&json).map_err(|err| MemoryError::Corrupt {
                what: "pinned model".into(),
                detail: err.to_string(),
            })?,
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('pinned', ?1)",
                    [serde_json::to_string(model).unwrap_or_default()],
                )
                .map_err(e("pin model"))?;
                model.clone()
            }
        };
        let mut inner = Inner {
            conn,
            pinned,
            indexes: HashMap::new(),
        };
        inner.load_indexes().map_err(e("load vectors"))?;
        Ok(SqliteMemory {
            path,
            inner: Mutex::new(inner),
        })
    }

    fn err(&self, context: &'static str) -> impl FnOnce(rusqlite::Error) -> MemoryError + '_ {
        move |source| MemoryError::Sqlite {
            path: self.path.display().to_string(),
            context,
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of vectors in the serving indexes (all tenants; facts no search can return are not
    /// indexed).
    pub fn indexed(&self) -> usize {
        self.lock().indexes.values().map(VectorIndex::len).sum()
    }

    /// Deletes the facts (of `tenant`, or of every tenant) expired at `now`, with their vectors
    /// in every model's index, in one transaction; then drops them from the in-memory indexes.
    fn sweep_expired(
        &self,
        tenant: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Swept>, MemoryError> {
        let mut g = self.lock();
        let tx = g.conn.transaction().map_err(self.err("begin sweep"))?;
        let docs: Vec<String> = {
            // `?2 IS NULL`: no tenant named, every tenant's facts.
            let mut st = tx
                .prepare(
                    "SELECT doc FROM facts WHERE expires_ms IS NOT NULL AND expires_ms <= ?1
                     AND (?2 IS NULL OR tenant = ?2)",
                )
                .map_err(self.err("find expired"))?;
            st.query_map(params![now.timestamp_millis(), tenant], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(self.err("find expired"))?
        };
        let mut swept = Vec::with_capacity(docs.len());
        let mut gone = Vec::new();
        for d in &docs {
            let f = decode(d)?;
            if let Some(key) = partition(&f) {
                gone.push((key, f.id.clone()));
            }
            tx.execute("DELETE FROM vectors WHERE fact_id = ?1", [&f.id])
                .map_err(self.err("sweep vectors"))?;
            tx.execute("DELETE FROM facts WHERE id = ?1", [&f.id])
                .map_err(self.err("sweep fact"))?;
            swept.push(Swept {
                id: f.id.clone(),
                tenant: f.tenant.clone(),
                volatility: f.volatility.clone(),
                expired_at: f.expires_at.unwrap_or(now),
            });
        }
        tx.commit().map_err(self.err("commit sweep"))?;
        for (key, id) in gone {
            if let Some(index) = g.indexes.get_mut(&key) {
                index.remove(&id);
            }
        }
        Ok(swept)
    }
}

impl SqliteMemory {
    /// The `k` best retrievable facts in one index: over-fetch, keep only retrievable facts, and
    /// widen until `k` are found or the whole index is seen.
    #[allow(clippy::too_many_arguments)] // the search's own arguments, passed through
    fn search_index(
        &self,
        g: &Inner,
        index: &VectorIndex,
        tenant: &str,
        subject: Option<&str>,
        vector: &[f32],
        k: usize,
        now: DateTime<Utc>,
        semantic_version: CatalogueVersion,
    ) -> Result<Vec<(Fact, f32)>, MemoryError> {
        let mut want = (k * 4).max(16);
        loop {
            let found = index.search(vector, want);
            let mut out = Vec::with_capacity(k);
            for (id, score) in &found {
                if let Some(doc) = g.fact(tenant, id).map_err(self.err("read fact"))? {
                    let fact = decode(&doc)?;
                    if fact.tenant == tenant && retrievable(&fact, subject, now, semantic_version) {
                        out.push((fact, *score));
                        if out.len() == k {
                            return Ok(out);
                        }
                    }
                }
            }
            if found.len() < want || want >= index.len() {
                return Ok(out);
            }
            want *= 4;
        }
    }
}

impl Inner {
    fn load_indexes(&mut self) -> Result<(), rusqlite::Error> {
        self.indexes.clear();
        let mut st = self.conn.prepare(
            "SELECT v.tenant, v.fact_id, v.vec, f.tier, f.subject, json_extract(f.doc, '$.scope')
             FROM vectors AS v JOIN facts AS f ON f.id = v.fact_id WHERE v.model = ?1",
        )?;
        let mut rows = st.query([self.pinned.key()])?;
        while let Some(r) = rows.next()? {
            let tenant: String = r.get(0)?;
            let id: String = r.get(1)?;
            let tier: String = r.get(3)?;
            let subject: Option<String> = r.get(4)?;
            let scope: Option<String> = r.get(5)?;
            let Some(key) = partition_of(&tenant, &tier, subject.as_deref(), scope.as_deref())
            else {
                continue;
            };
            let v = from_blob(&r.get::<_, Vec<u8>>(2)?);
            let dim = self.pinned.dim;
            self.indexes
                .entry(key)
                .or_insert_with(|| VectorIndex::new(dim))
                .insert(&id, &v);
        }
        Ok(())
    }

    fn fact(&self, tenant: &str, id: &str) -> Result<Option<String>, rusqlite::Error> {
        self.conn
            .query_row(
                "SELECT doc FROM facts WHERE tenant = ?1 AND id = ?2",
                params![tenant, id],
                |r| r.get(0),
            )
            .optional()
    }
}

fn ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

#[async_trait]
impl MemoryStore for SqliteMemory {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn pinned(&self) -> Result<EmbeddingModel, MemoryError> {
        Ok(self.lock().pinned.clone())
    }

    async fn insert(
        &self,
        fact: &Fact,
        vector: &[f32],
        model: &EmbeddingModel,
    ) -> Result<(), MemoryError> {
        let mut g = self.lock();
        check_model(&g.pinned, model)?;
        check_dim(model, vector)?;
        let tx = g.conn.transaction().map_err(self.err("begin insert"))?;
        tx.execute(
            "INSERT INTO facts (id, tenant, subject, tier, status, sem_from, sem_to, expires_ms, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                fact.id,
                fact.tenant,
                fact.subject,
                fact.tier.as_str(),
                fact.status.as_str(),
                fact.semantic_from.map(|v| v as i64),
                fact.semantic_to.map(|v| v as i64),
                ms(fact.expires_at),
                encode(fact)
            ],
        )
        .map_err(self.err("insert fact"))?;
        tx.execute(
            "INSERT INTO vectors (model, fact_id, tenant, vec) VALUES (?1, ?2, ?3, ?4)",
            params![model.key(), fact.id, fact.tenant, to_blob(vector)],
        )
        .map_err(self.err("insert vector"))?;
        tx.commit().map_err(self.err("commit insert"))?;
        if let Some(key) = partition(fact) {
            let dim = model.dim;
            g.indexes
                .entry(key)
                .or_insert_with(|| VectorIndex::new(dim))
                .insert(&fact.id, vector);
        }
        Ok(())
    }

    async fn search(
        &self,
        tenant: &str,
        subject: Option<&str>,
        vector: &[f32],
        model: &EmbeddingModel,
        k: usize,
        now: DateTime<Utc>,
        semantic_version: CatalogueVersion,
    ) -> Result<Vec<(Fact, f32)>, MemoryError> {
        let g = self.lock();
        check_model(&g.pinned, model)?;
        check_dim(model, vector)?;
        // The tenant-wide index, and the subject's own: nothing else can match.
        let mut keys = vec![(tenant.to_owned(), None)];
        if let Some(s) = subject {
            keys.push((tenant.to_owned(), Some(s.to_owned())));
        }
        let mut out: Vec<(Fact, f32)> = Vec::with_capacity(k * keys.len());
        for key in &keys {
            if let Some(index) = g.indexes.get(key) {
                out.extend(self.search_index(
                    &g,
                    index,
                    tenant,
                    subject,
                    vector,
                    k,
                    now,
                    semantic_version,
                )?);
            }
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.truncate(k);
        Ok(out)
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Fact>, MemoryError> {
        let g = self.lock();
        g.fact(tenant, id)
            .map_err(self.err("read fact"))?
            .map(|d| decode(&d))
            .transpose()
    }

    async fn list(&self, tenant: &str, subject: Option<&str>) -> Result<Vec<Fact>, MemoryError> {
        let g = self.lock();
        let mut st = g
            .conn
            .prepare(
                "SELECT doc FROM facts WHERE tenant = ?1 AND (?2 IS NULL OR subject = ?2) ORDER BY id",
            )
            .map_err(self.err("list facts"))?;
        let docs: Vec<String> = st
            .query_map(params![tenant, subject], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.err("list facts"))?;
        docs.iter().map(|d| decode(d)).collect()
    }

    async fn set_status(
        &self,
        tenant: &str,
        id: &str,
        status: Status,
    ) -> Result<Fact, MemoryError> {
        let g = self.lock();
        let doc = g.fact(tenant, id).map_err(self.err("read fact"))?;
        let mut fact = decode(&doc.ok_or_else(|| MemoryError::NotFound {
            tenant: tenant.into(),
            id: id.into(),
        })?)?;
        fact.status = status;
        g.conn
            .execute(
                "UPDATE facts SET status = ?3, doc = ?4 WHERE tenant = ?1 AND id = ?2",
                params![tenant, id, status.as_str(), encode(&fact)],
            )
            .map_err(self.err("update status"))?;
        Ok(fact)
    }

    async fn catalogue_version(&self, tenant: &str) -> Result<CatalogueVersion, MemoryError> {
        let g = self.lock();
        let v: Option<i64> = g
            .conn
            .query_row(
                "SELECT version FROM catalogue WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("read catalogue"))?;
        Ok(v.unwrap_or(0) as u64)
    }

    async fn publish(
        &self,
        fact: &Fact,
        vector: &[f32],
        model: &EmbeddingModel,
        supersedes: &[String],
    ) -> Result<CatalogueVersion, MemoryError> {
        let mut g = self.lock();
        check_model(&g.pinned, model)?;
        check_dim(model, vector)?;
        let tenant = fact.tenant.clone();
        let tx = g.conn.transaction().map_err(self.err("begin publish"))?;
        let current: i64 = tx
            .query_row(
                "SELECT version FROM catalogue WHERE tenant = ?1",
                [&tenant],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("read catalogue"))?
            .unwrap_or(0);
        let next = current + 1;
        for old in supersedes {
            let doc: Option<String> = tx
                .query_row(
                    "SELECT doc FROM facts WHERE tenant = ?1 AND id = ?2 AND tier = 'semantic'",
                    params![tenant, old],
                    |r| r.get(0),
                )
                .optional()
                .map_err(self.err("read superseded"))?;
            let mut f = decode(&doc.ok_or_else(|| MemoryError::NotFound {
                tenant: tenant.clone(),
                id: old.clone(),
            })?)?;
            f.semantic_to = Some(next as u64);
            f.status = Status::Superseded;
            tx.execute(
                "UPDATE facts SET sem_to = ?3, status = 'superseded', doc = ?4 WHERE tenant = ?1 AND id = ?2",
                params![tenant, old, next, encode(&f)],
            )
            .map_err(self.err("supersede"))?;
        }
        let mut f = fact.clone();
        f.tier = Tier::Semantic;
        f.semantic_from = Some(next as u64);
        f.semantic_to = None;
        tx.execute(
            "INSERT INTO facts (id, tenant, subject, tier, status, sem_from, sem_to, expires_ms, doc)
             VALUES (?1, ?2, ?3, 'semantic', ?4, ?5, NULL, ?6, ?7)",
            params![
                f.id,
                f.tenant,
                f.subject,
                f.status.as_str(),
                next,
                ms(f.expires_at),
                encode(&f)
            ],
        )
        .map_err(self.err("insert semantic fact"))?;
        tx.execute(
            "INSERT INTO vectors (model, fact_id, tenant, vec) VALUES (?1, ?2, ?3, ?4)",
            params![model.key(), f.id, f.tenant, to_blob(vector)],
        )
        .map_err(self.err("insert vector"))?;
        tx.execute(
            "INSERT INTO catalogue (tenant, version) VALUES (?1, ?2)
             ON CONFLICT (tenant) DO UPDATE SET version = excluded.version",
            params![tenant, next],
        )
        .map_err(self.err("bump catalogue"))?;
        tx.commit().map_err(self.err("commit publish"))?;
        let dim = model.dim;
        g.indexes
            .entry((tenant, None))
            .or_insert_with(|| VectorIndex::new(dim))
            .insert(&f.id, vector);
        Ok(next as u64)
    }

    async fn erase_subject(&self, tenant: &str, subject: &str) -> Result<Vec<String>, MemoryError> {
        let mut g = self.lock();
        let tx = g.conn.transaction().map_err(self.err("begin erase"))?;
        let ids: Vec<String> = {
            let mut st = tx
                .prepare("SELECT id FROM facts WHERE tenant = ?1 AND subject = ?2")
                .map_err(self.err("find subject"))?;
            st.query_map(params![tenant, subject], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(self.err("find subject"))?
        };
        for id in &ids {
            // Every model's index, the side one of an unfinished migration included.
            tx.execute("DELETE FROM vectors WHERE fact_id = ?1", [id])
                .map_err(self.err("erase vectors"))?;
            tx.execute("DELETE FROM facts WHERE id = ?1", [id])
                .map_err(self.err("erase fact"))?;
        }
        tx.commit().map_err(self.err("commit erase"))?;
        // Fold the WAL into the main file so the overwritten pages are all that remains.
        g.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(self.err("checkpoint after erase"))?;
        // The subject's own index goes; its promoted (semantic) facts sat in the tenant-wide one.
        g.indexes
            .remove(&(tenant.to_owned(), Some(subject.to_owned())));
        if let Some(index) = g.indexes.get_mut(&(tenant.to_owned(), None)) {
            for id in &ids {
                index.remove(id);
            }
        }
        Ok(ids)
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<Swept>, MemoryError> {
        self.sweep_expired(None, now)
    }

    async fn sweep_tenant(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Swept>, MemoryError> {
        self.sweep_expired(Some(tenant), now)
    }

    async fn migration_start(&self, model: &EmbeddingModel) -> Result<(), MemoryError> {
        let g = self.lock();
        // Vectors already built for this model survive (a rerun continues); nothing else to set
        // up: the side index is the `vectors` rows of the new model key.
        g.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('migrating', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [serde_json::to_string(model).unwrap_or_default()],
            )
            .map_err(self.err("start migration"))?;
        Ok(())
    }

    async fn migration_pending(
        &self,
        model: &EmbeddingModel,
        limit: usize,
    ) -> Result<Vec<(String, String)>, MemoryError> {
        let g = self.lock();
        let mut st = g
            .conn
            .prepare(
                "SELECT f.id, f.doc FROM facts f WHERE NOT EXISTS
                 (SELECT 1 FROM vectors v WHERE v.model = ?1 AND v.fact_id = f.id)
                 ORDER BY f.id LIMIT ?2",
            )
            .map_err(self.err("migration pending"))?;
        let rows: Vec<(String, String)> = st
            .query_map(params![model.key(), limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(self.err("migration pending"))?;
        rows.into_iter()
            .map(|(id, doc)| Ok((id, decode(&doc)?.text)))
            .collect()
    }

    async fn migration_put(
        &self,
        model: &EmbeddingModel,
        rows: &[(String, Vec<f32>)],
    ) -> Result<(), MemoryError> {
        let mut g = self.lock();
        let tx = g
            .conn
            .transaction()
            .map_err(self.err("begin migration batch"))?;
        for (id, v) in rows {
            check_dim(model, v)?;
            tx.execute(
                "INSERT OR REPLACE INTO vectors (model, fact_id, tenant, vec)
                 SELECT ?1, id, tenant, ?3 FROM facts WHERE id = ?2",
                params![model.key(), id, to_blob(v)],
            )
            .map_err(self.err("migration vector"))?;
        }
        tx.commit().map_err(self.err("commit migration batch"))?;
        Ok(())
    }

    async fn migration_switch(&self, model: &EmbeddingModel) -> Result<(), MemoryError> {
        let mut g = self.lock();
        let old = g.pinned.key();
        let tx = g.conn.transaction().map_err(self.err("begin switch"))?;
        let missing: i64 = tx
            .query_row(
                "SELECT count(*) FROM facts f WHERE NOT EXISTS
                 (SELECT 1 FROM vectors v WHERE v.model = ?1 AND v.fact_id = f.id)",
                [model.key()],
                |r| r.get(0),
            )
            .map_err(self.err("check migration"))?;
        if missing > 0 {
            return Err(MemoryError::Invalid(format!(
                "cannot switch to {model}: {missing} facts have no vector in its index yet"
            )));
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'pinned'",
            [serde_json::to_string(model).unwrap_or_default()],
        )
        .map_err(self.err("switch pinned model"))?;
        tx.execute("DELETE FROM meta WHERE key = 'migrating'", [])
            .map_err(self.err("switch"))?;
        tx.execute("DELETE FROM vectors WHERE model = ?1", [old])
            .map_err(self.err("drop old index"))?;
        tx.commit().map_err(self.err("commit switch"))?;
        g.pinned = model.clone();
        g.load_indexes().map_err(self.err("load new index"))?;
        Ok(())
    }
}
