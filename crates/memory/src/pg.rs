//! The scaled backend: PostgreSQL with pgvector. Facts in `keel_facts`, one vector table per
//! embedding model (`keel_vec_<hash of the model key>`, `vector(dim)` with an HNSW cosine index),
//! the pinned model in `keel_memory_meta`, semantic catalogue versions in `keel_catalogue`.
//!
//! Tenant isolation is enforced by the database: row-level security (forced, so it binds the
//! tables' owner too) on every tenant table, with each tenant-scoped call running in a transaction
//! as the `keel_memory_tenant` role with `keel.tenant` set for that transaction only. A query that
//! forgot its `WHERE tenant = …` would still see only its tenant. Operator jobs across tenants
//! (the all-tenant TTL sweep, embedding migration) run as the connecting user; a one-tenant
//! sweep runs as the tenant role like every other tenant-scoped call.

use crate::error::MemoryError;
use crate::fact::{EmbeddingModel, Fact, Status, Swept};
use crate::store::{CatalogueVersion, MemoryStore, check_dim, check_model, retrievable};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgvector::Vector;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_postgres::{Client, Transaction};

const ROLE: &str = "keel_memory_tenant";

const SCHEMA: &str = "
CREATE EXTENSION IF NOT EXISTS vector;
DO $$ BEGIN
  CREATE ROLE keel_memory_tenant NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
CREATE TABLE IF NOT EXISTS keel_memory_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS keel_facts (
  id text PRIMARY KEY, tenant text NOT NULL, subject text, tier text NOT NULL,
  status text NOT NULL, sem_from bigint, sem_to bigint, expires_ms bigint, doc jsonb NOT NULL);
CREATE INDEX IF NOT EXISTS keel_facts_by_subject ON keel_facts (tenant, subject);
CREATE INDEX IF NOT EXISTS keel_facts_by_expiry ON keel_facts (expires_ms);
CREATE TABLE IF NOT EXISTS keel_catalogue (tenant text PRIMARY KEY, version bigint NOT NULL);
ALTER TABLE keel_facts ENABLE ROW LEVEL SECURITY;
ALTER TABLE keel_facts FORCE ROW LEVEL SECURITY;
ALTER TABLE keel_catalogue ENABLE ROW LEVEL SECURITY;
ALTER TABLE keel_catalogue FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS keel_tenant ON keel_facts;
CREATE POLICY keel_tenant ON keel_facts TO keel_memory_tenant
  USING (tenant = current_setting('keel.tenant', true))
  WITH CHECK (tenant = current_setting('keel.tenant', true));
DROP POLICY IF EXISTS keel_tenant ON keel_catalogue;
CREATE POLICY keel_tenant ON keel_catalogue TO keel_memory_tenant
  USING (tenant = current_setting('keel.tenant', true))
  WITH CHECK (tenant = current_setting('keel.tenant', true));
DROP POLICY IF EXISTS keel_operator ON keel_facts;
CREATE POLICY keel_operator ON keel_facts TO PUBLIC USING (current_user <> 'keel_memory_tenant');
DROP POLICY IF EXISTS keel_operator ON keel_catalogue;
CREATE POLICY keel_operator ON keel_catalogue TO PUBLIC USING (current_user <> 'keel_memory_tenant');
GRANT SELECT, INSERT, UPDATE, DELETE ON keel_facts, keel_catalogue TO keel_memory_tenant;
GRANT SELECT ON keel_memory_meta TO keel_memory_tenant;
";

/// The table holding `model`'s vectors.
pub fn vector_table(model: &EmbeddingModel) -> String {
    // The first 6 bytes, as 12 hex digits.
    let h = hex::encode(&Sha256::digest(model.key().as_bytes())[..6]);
    format!("keel_vec_{h}")
}

/// The PostgreSQL + pgvector memory store.
pub struct PgMemory {
    client: Mutex<Client>,
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

fn ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

/// What a sweep's `DELETE … RETURNING doc::text` removed.
fn swept(rows: &[tokio_postgres::Row], now: DateTime<Utc>) -> Result<Vec<Swept>, MemoryError> {
    rows.iter()
        .map(|r| {
            let f = decode(r.get::<_, &str>(0))?;
            Ok(Swept {
                expired_at: f.expires_at.unwrap_or(now),
                id: f.id,
                tenant: f.tenant,
                volatility: f.volatility,
            })
        })
        .collect()
}

async fn tenant_tx<'a>(
    client: &'a mut Client,
    tenant: &str,
) -> Result<Transaction<'a>, MemoryError> {
    let tx = client
        .transaction()
        .await
        .map_err(MemoryError::pg("begin"))?;
    tx.batch_execute(&format!("SET LOCAL ROLE {ROLE}"))
        .await
        .map_err(MemoryError::pg("set tenant role"))?;
    tx.execute("SELECT set_config('keel.tenant', $1, true)", &[&tenant])
        .await
        .map_err(MemoryError::pg("set tenant"))?;
    Ok(tx)
}

async fn create_vector_table(
    c: &impl tokio_postgres::GenericClient,
    model: &EmbeddingModel,
) -> Result<(), MemoryError> {
    let t = vector_table(model);
    let dim = model.dim;
    c.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (
           fact_id text PRIMARY KEY REFERENCES keel_facts (id) ON DELETE CASCADE,
           tenant text NOT NULL, embedding vector({dim}) NOT NULL);
         CREATE INDEX IF NOT EXISTS {t}_hnsw ON {t} USING hnsw (embedding vector_cosine_ops);
         ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
         ALTER TABLE {t} FORCE ROW LEVEL SECURITY;
         DROP POLICY IF EXISTS keel_tenant ON {t};
         CREATE POLICY keel_tenant ON {t} TO {ROLE}
           USING (tenant = current_setting('keel.tenant', true))
           WITH CHECK (tenant = current_setting('keel.tenant', true));
         DROP POLICY IF EXISTS keel_operator ON {t};
         CREATE POLICY keel_operator ON {t} TO PUBLIC USING (current_user <> '{ROLE}');
         GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {ROLE};"
    ))
    .await
    .map_err(MemoryError::pg("create vector table"))
}

impl PgMemory {
    /// Connects (e.g. `postgresql://postgres@127.0.0.1:5432/keel`), creates the schema if needed,
    /// and pins a new store to `model` (an existing store keeps its model).
    ///
    /// TLS is the spine's: the URL's `sslmode` and `sslrootcert` decide, and a certificate is
    /// always verified.
    pub async fn connect(url: &str, model: &EmbeddingModel) -> Result<Self, MemoryError> {
        let (config, tls, _) =
            keel_spine::postgres::connector(url).map_err(|e| MemoryError::Config {
                field: "postgres URL".into(),
                detail: e.to_string(),
            })?;
        let (client, conn) = config
            .connect(tls)
            .await
            .map_err(MemoryError::pg("connect"))?;
        tokio::spawn(async move {
            // The connection ends when the client is dropped; errors surface on the client.
            let _ = conn.await;
        });
        client
            .batch_execute(SCHEMA)
            .await
            .map_err(MemoryError::pg("create schema"))?;
        let pinned = serde_json::to_string(model).unwrap_or_default();
        client
            .execute(
                "INSERT INTO keel_memory_meta (key, value) VALUES ('pinned', $1)
                 ON CONFLICT (key) DO NOTHING",
                &[&pinned],
            )
            .await
            .map_err(MemoryError::pg("pin model"))?;
        let me = PgMemory {
            client: Mutex::new(client),
        };
        let pinned = me.pinned().await?;
        create_vector_table(&*me.client.lock().await, &pinned).await?;
        Ok(me)
    }

    /// How many fact rows a transaction scoped to `tenant` can see with no `WHERE` at all: what
    /// row-level security lets through (for isolation tests and audits).
    pub async fn visible_rows(&self, tenant: &str) -> Result<i64, MemoryError> {
        let mut c = self.client.lock().await;
        let tx = tenant_tx(&mut c, tenant).await?;
        let n: i64 = tx
            .query_one("SELECT count(*) FROM keel_facts", &[])
            .await
            .map_err(MemoryError::pg("count visible"))?
            .get(0);
        tx.commit().await.map_err(MemoryError::pg("commit"))?;
        Ok(n)
    }
}

#[async_trait]
impl MemoryStore for PgMemory {
    fn backend(&self) -> &'static str {
        "pgvector"
    }

    async fn pinned(&self) -> Result<EmbeddingModel, MemoryError> {
        let c = self.client.lock().await;
        let row = c
            .query_one(
                "SELECT value FROM keel_memory_meta WHERE key = 'pinned'",
                &[],
            )
            .await
            .map_err(MemoryError::pg("read pinned model"))?;
        serde_json::from_str(row.get::<_, &str>(0)).map_err(|e| MemoryError::Corrupt {
            what: "pinned model".into(),
            detail: e.to_string(),
        })
    }

    async fn insert(
        &self,
        fact: &Fact,
        vector: &[f32],
        model: &EmbeddingModel,
    ) -> Result<(), MemoryError> {
        check_model(&self.pinned().await?, model)?;
        check_dim(model, vector)?;
        let mut c = self.client.lock().await;
        let tx = tenant_tx(&mut c, &fact.tenant).await?;
        tx.execute(
            "INSERT INTO keel_facts (id, tenant, subject, tier, status, sem_from, sem_to, expires_ms, doc)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb)",
            &[
                &fact.id,
                &fact.tenant,
                &fact.subject,
                &fact.tier.as_str(),
                &fact.status.as_str(),
                &fact.semantic_from.map(|v| v as i64),
                &fact.semantic_to.map(|v| v as i64),
                &ms(fact.expires_at),
                &encode(fact),
            ],
        )
        .await
        .map_err(MemoryError::pg("insert fact"))?;
        tx.execute(
            &format!(
                "INSERT INTO {} (fact_id, tenant, embedding) VALUES ($1, $2, $3)",
                vector_table(model)
            ),
            &[&fact.id, &fact.tenant, &Vector::from(vector.to_vec())],
        )
        .await
        .map_err(MemoryError::pg("insert vector"))?;
        tx.commit().await.map_err(MemoryError::pg("commit insert"))
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
        check_model(&self.pinned().await?, model)?;
        check_dim(model, vector)?;
        let mut c = self.client.lock().await;
        let tx = tenant_tx(&mut c, tenant).await?;
        tx.batch_execute(
            "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = 100",
        )
        .await
        .map_err(MemoryError::pg("set search options"))?;
        // Tenant-wide facts through the HNSW index; a subject's own episodic facts exactly, through
        // the (tenant, subject) index (`+ 0` keeps the planner off HNSW, whose filtered scan could
        // stop before reaching a subject's few facts among a tenant's many).
        let mut rows = tx
            .query(
                &format!(
                    "SELECT f.doc::text, (1 - (v.embedding <=> $1))::float4 AS score
                     FROM {} v JOIN keel_facts f ON f.id = v.fact_id
                     WHERE v.tenant = $2 AND f.tenant = $2
                       AND (f.expires_ms IS NULL OR f.expires_ms > $3)
                       AND ((f.tier = 'episodic' AND f.status = 'active' AND f.doc->>'scope' = 'tenant')
                         OR (f.tier = 'semantic' AND f.sem_from <= $4 AND (f.sem_to IS NULL OR f.sem_to > $4)))
                     ORDER BY v.embedding <=> $1 LIMIT $5",
                    vector_table(model)
                ),
                &[
                    &Vector::from(vector.to_vec()),
                    &tenant,
                    &now.timestamp_millis(),
                    &(semantic_version as i64),
                    &(k as i64),
                ],
            )
            .await
            .map_err(MemoryError::pg("search"))?;
        if let Some(subject) = subject {
            rows.extend(
                tx.query(
                    &format!(
                        "SELECT f.doc::text, (1 - (v.embedding <=> $1))::float4 AS score
                         FROM keel_facts f JOIN {} v ON v.fact_id = f.id
                         WHERE f.tenant = $2 AND f.subject = $5 AND v.tenant = $2
                           AND (f.expires_ms IS NULL OR f.expires_ms > $3)
                           AND f.tier = 'episodic' AND f.status = 'active'
                           AND coalesce(f.doc->>'scope', 'subject') = 'subject'
                         ORDER BY (v.embedding <=> $1) + 0 LIMIT $4",
                        vector_table(model)
                    ),
                    &[
                        &Vector::from(vector.to_vec()),
                        &tenant,
                        &now.timestamp_millis(),
                        &(k as i64),
                        &subject,
                    ],
                )
                .await
                .map_err(MemoryError::pg("search a subject's facts"))?,
            );
        }
        tx.commit()
            .await
            .map_err(MemoryError::pg("commit search"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let fact = decode(r.get::<_, &str>(0))?;
            if fact.tenant == tenant && retrievable(&fact, subject, now, semantic_version) {
                out.push((fact, r.get::<_, f32>(1)));
            }
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.truncate(k);
        Ok(out)
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Fact>, MemoryError> {
        let mut c = self.client.lock().await;
        let tx = tenant_tx(&mut c, tenant).await?;
        let row = tx
            .query_opt(
                "SELECT doc::text FROM keel_facts WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(MemoryError::pg("read fact"))?;
        tx.commit().await.map_err(MemoryError::pg("commit"))?;
        row.map(|r| decode(r.get::<_, &str>(0))).transpose()
    }

    async fn list(&self, tenant: &str, subject: Option<&str>) -> Result<Vec<Fact>, MemoryError> {
        let mut c = self.client.lock().await;
        let tx = tenant_tx(&mut c, tenant).await?;
        let rows = tx
            .query(
                "SELECT doc::text FROM keel_facts WHERE tenant = $1 AND ($2::text IS NULL OR subject = $2) ORDER BY id",
                &[&tenant, &subject],
            )
            .await
            .map_err(MemoryError::pg("list facts"))?;
        tx.commit().await.map_err(MemoryError::pg("commit"))?;
        rows.iter().map(|r| decode(r.get::<_, &str>(0))).collect()
    }

    async fn set_status(
        &self,
        tenant: &str,
        id: &str,
        status: Status,
    ) -> Result<Fact, MemoryError> {
        let mut c = self.client.lock().await;
        let tx = tenant_tx(&mut c, tenant).await?;
        let row = tx
            .query_opt(
                "SELECT doc::text FROM keel_facts WHERE tenant = $1 AND id = $2 FOR UPDATE",
                &[&tenant, &id],
            )
            .await
            .map_err(MemoryError::pg("read fact"))?
            .ok_or_else(|| MemoryError::NotFound {
                tenant: tenant.into(),
                id: id.into(),
            })?;
        let mut fact = decode(row.get::<_, &str>(0))?;
        fact.status = status;
        tx.execute(
            "UPDATE keel_facts SET status = $3, doc = $4::text::jsonb WHERE tenant = $1 AND id = $2",
            &[&tenant, &id, &status.as_str(), &encode(&fact)],
        )
        .await
        .map_err(MemoryError::pg("update status"))?;
        tx.commit()
            .await
            .map_err(MemoryError::pg("commit status"))?;
        Ok(fact)
    }

    async fn catalogue_version(&self, tenant: &str) -> Result<CatalogueVersion, MemoryError> {
        let mut c = self.client.lock().await;
        let tx = tenant_tx(&mut c, tenant).await?;
        let v: Option<i64> = tx
            .query_opt(
                "SELECT version FROM keel_catalogue WHERE tenant = $1",
                &[&tenant],
            )
            .await
            .map_err(MemoryError::pg("read catalogue"))?
            .map(|r| r.get(0));
        tx.commit().await.map_err(MemoryError::pg("commit"))?;
        Ok(v.unwrap_or(0) as u64)
    }

    async fn publish(
        &self,
        fact: &Fact,
        vector: &[f32],
        model: &EmbeddingModel,
        supersedes: &[String],
    ) -> Result<CatalogueVersion, MemoryError> {
        check_model(&self.pinned().await?, model)?;
        check_dim(model, vector)?;
        let tenant = fact.tenant.as_str();
        let mut c = self.client.lock().await;
        let tx = tenant_tx(&mut c, tenant).await?;
        let next: i64 = tx
            .query_one(
                "INSERT INTO keel_catalogue (tenant, version) VALUES ($1, 1)
                 ON CONFLICT (tenant) DO UPDATE SET version = keel_catalogue.version + 1
                 RETURNING version",
                &[&tenant],
            )
            .await
            .map_err(MemoryError::pg("bump catalogue"))?
            .get(0);
        for old in supersedes {
            let row = tx
                .query_opt(
                    "SELECT doc::text FROM keel_facts WHERE tenant = $1 AND id = $2 AND tier = 'semantic' FOR UPDATE",
                    &[&tenant, old],
                )
                .await
                .map_err(MemoryError::pg("read superseded"))?
                .ok_or_else(|| MemoryError::NotFound {
                    tenant: tenant.into(),
                    id: old.clone(),
                })?;
            let mut f = decode(row.get::<_, &str>(0))?;
            f.semantic_to = Some(next as u64);
            f.status = Status::Superseded;
            tx.execute(
                "UPDATE keel_facts SET sem_to = $3, status = 'superseded', doc = $4::text::jsonb WHERE tenant = $1 AND id = $2",
                &[&tenant, old, &next, &encode(&f)],
            )
            .await
            .map_err(MemoryError::pg("supersede"))?;
        }
        let mut f = fact.clone();
        f.semantic_from = Some(next as u64);
        f.semantic_to = None;
        tx.execute(
            "INSERT INTO keel_facts (id, tenant, subject, tier, status, sem_from, sem_to, expires_ms, doc)
             VALUES ($1, $2, $3, 'semantic', $4, $5, NULL, $6, $7::text::jsonb)",
            &[
                &f.id,
                &f.tenant,
                &f.subject,
                &f.status.as_str(),
                &next,
                &ms(f.expires_at),
                &encode(&f),
            ],
        )
        .await
        .map_err(MemoryError::pg("insert semantic fact"))?;
        tx.execute(
            &format!(
                "INSERT INTO {} (fact_id, tenant, embedding) VALUES ($1, $2, $3)",
                vector_table(model)
            ),
            &[&f.id, &f.tenant, &Vector::from(vector.to_vec())],
        )
        .await
        .map_err(MemoryError::pg("insert vector"))?;
        tx.commit()
            .await
            .map_err(MemoryError::pg("commit publish"))?;
        Ok(next as u64)
    }

    async fn erase_subject(&self, tenant: &str, subject: &str) -> Result<Vec<String>, MemoryError> {
        let mut c = self.client.lock().await;
        let tx = tenant_tx(&mut c, tenant).await?;
        // Vectors in every model's table go with their fact (ON DELETE CASCADE).
        let rows = tx
            .query(
                "DELETE FROM keel_facts WHERE tenant = $1 AND subject = $2 RETURNING id",
                &[&tenant, &subject],
            )
            .await
            .map_err(MemoryError::pg("erase subject"))?;
        tx.commit().await.map_err(MemoryError::pg("commit erase"))?;
        // Reclaim the dead tuples so the erased rows do not linger in the heap.
        c.batch_execute("VACUUM keel_facts")
            .await
            .map_err(MemoryError::pg("vacuum after erase"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<Swept>, MemoryError> {
        let c = self.client.lock().await;
        // Vectors in every model's table go with their fact (ON DELETE CASCADE).
        let rows = c
            .query(
                "DELETE FROM keel_facts WHERE expires_ms IS NOT NULL AND expires_ms <= $1 RETURNING doc::text",
                &[&now.timestamp_millis()],
            )
            .await
            .map_err(MemoryError::pg("sweep"))?;
        swept(&rows, now)
    }

    async fn sweep_tenant(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Swept>, MemoryError> {
        let mut c = self.client.lock().await;
        // As the tenant role: row-level security confines the delete to `tenant` even without
        // the WHERE clause's tenant filter.
        let tx = tenant_tx(&mut c, tenant).await?;
        let rows = tx
            .query(
                "DELETE FROM keel_facts WHERE tenant = $1 AND expires_ms IS NOT NULL AND expires_ms <= $2
                 RETURNING doc::text",
                &[&tenant, &now.timestamp_millis()],
            )
            .await
            .map_err(MemoryError::pg("sweep tenant"))?;
        let swept = swept(&rows, now)?;
        tx.commit()
            .await
            .map_err(MemoryError::pg("commit tenant sweep"))?;
        Ok(swept)
    }

    async fn migration_start(&self, model: &EmbeddingModel) -> Result<(), MemoryError> {
        let c = self.client.lock().await;
        create_vector_table(&*c, model).await?;
        c.execute(
            "INSERT INTO keel_memory_meta (key, value) VALUES ('migrating', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&serde_json::to_string(model).unwrap_or_default()],
        )
        .await
        .map_err(MemoryError::pg("start migration"))?;
        Ok(())
    }

    async fn migration_pending(
        &self,
        model: &EmbeddingModel,
        limit: usize,
    ) -> Result<Vec<(String, String)>, MemoryError> {
        let c = self.client.lock().await;
        let rows = c
            .query(
                &format!(
                    "SELECT f.id, f.doc->>'text' FROM keel_facts f WHERE NOT EXISTS
                     (SELECT 1 FROM {} v WHERE v.fact_id = f.id) ORDER BY f.id LIMIT $1",
                    vector_table(model)
                ),
                &[&(limit as i64)],
            )
            .await
            .map_err(MemoryError::pg("migration pending"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn migration_put(
        &self,
        model: &EmbeddingModel,
        rows: &[(String, Vec<f32>)],
    ) -> Result<(), MemoryError> {
        let mut c = self.client.lock().await;
        let tx = c.transaction().await.map_err(MemoryError::pg("begin"))?;
        let sql = format!(
            "INSERT INTO {} (fact_id, tenant, embedding)
             SELECT id, tenant, $2 FROM keel_facts WHERE id = $1
             ON CONFLICT (fact_id) DO UPDATE SET embedding = excluded.embedding",
            vector_table(model)
        );
        for (id, v) in rows {
            check_dim(model, v)?;
            tx.execute(&sql, &[id, &Vector::from(v.clone())])
                .await
                .map_err(MemoryError::pg("migration vector"))?;
        }
        tx.commit()
            .await
            .map_err(MemoryError::pg("commit migration batch"))
    }

    async fn migration_switch(&self, model: &EmbeddingModel) -> Result<(), MemoryError> {
        let old = self.pinned().await?;
        let mut c = self.client.lock().await;
        let tx = c
            .transaction()
            .await
            .map_err(MemoryError::pg("begin switch"))?;
        tx.batch_execute("LOCK TABLE keel_facts IN SHARE MODE")
            .await
            .map_err(MemoryError::pg("lock facts"))?;
        let missing: i64 = tx
            .query_one(
                &format!(
                    "SELECT count(*) FROM keel_facts f WHERE NOT EXISTS
                     (SELECT 1 FROM {} v WHERE v.fact_id = f.id)",
                    vector_table(model)
                ),
                &[],
            )
            .await
            .map_err(MemoryError::pg("check migration"))?
            .get(0);
        if missing > 0 {
            return Err(MemoryError::Invalid(format!(
                "cannot switch to {model}: {missing} facts have no vector in its index yet"
            )));
        }
        tx.execute(
            "UPDATE keel_memory_meta SET value = $1 WHERE key = 'pinned'",
            &[&serde_json::to_string(model).unwrap_or_default()],
        )
        .await
        .map_err(MemoryError::pg("switch pinned model"))?;
        tx.execute("DELETE FROM keel_memory_meta WHERE key = 'migrating'", &[])
            .await
            .map_err(MemoryError::pg("switch"))?;
        if old != *model {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", vector_table(&old)))
                .await
                .map_err(MemoryError::pg("drop old index"))?;
        }
        tx.commit().await.map_err(MemoryError::pg("commit switch"))
    }
}
