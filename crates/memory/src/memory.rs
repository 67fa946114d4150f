//! [`Memory`]: the governed front of a store. Every write is PII-screened, put in review when its
//! source is trusted less than the policy's threshold, given its class's TTL and freshness window,
//! embedded by the pinned model and stored. Every retrieval is tenant-scoped, refuses a model other
//! than the pinned one, drops expired facts, and returns each hit with its age and a `stale` flag.

use crate::embed::Embedder;
use crate::error::MemoryError;
use crate::fact::{Fact, Hit, NewFact, Query, Scope, Status, Swept, Tier, Trust};
use crate::pii;
use crate::policy::MemoryPolicy;
use crate::store::{CatalogueVersion, MemoryStore, check_model};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// What a retrieval returns: the hits and the exact memory version read.
#[derive(Clone, Debug, PartialEq)]
pub struct Retrieval {
    /// Best first.
    pub hits: Vec<Hit>,
    /// `<embedding model key>#semantic-v<N>`: what `memory.retrieved` records.
    pub memory_version: String,
}

/// The governed memory of one deployment.
#[derive(Clone)]
pub struct Memory {
    /// The backend.
    pub store: Arc<dyn MemoryStore>,
    /// The embedder (must be the store's pinned model to query).
    pub embedder: Arc<dyn Embedder>,
    /// The rules.
    pub policy: MemoryPolicy,
}

fn days(d: f64) -> Duration {
    Duration::milliseconds((d * 86_400_000.0) as i64)
}

impl Memory {
    /// Builds the front; checks the policy.
    pub fn new(
        store: Arc<dyn MemoryStore>,
        embedder: Arc<dyn Embedder>,
        policy: MemoryPolicy,
    ) -> Result<Self, MemoryError> {
        policy.validate()?;
        Ok(Memory {
            store,
            embedder,
            policy,
        })
    }

    /// Screens, classifies and stores one distilled fact, retrievable only for its subject
    /// ([`Scope::Subject`]). A fact the PII policy rejects is an error
    /// ([`MemoryError::PiiRejected`]) and nothing is stored.
    pub async fn write(&self, new: NewFact, now: DateTime<Utc>) -> Result<Fact, MemoryError> {
        let fact = self.prepare(new, uuid::Uuid::now_v7().to_string(), now)?;
        self.store(&fact).await?;
        Ok(fact)
    }

    /// Like [`Memory::write`], for knowledge about no one in particular that every execution of
    /// the tenant may retrieve ([`Scope::Tenant`]): an operator's act, never the distiller's. A
    /// fact about a subject cannot be tenant-wide.
    pub async fn write_tenant_wide(
        &self,
        new: NewFact,
        now: DateTime<Utc>,
    ) -> Result<Fact, MemoryError> {
        if new.provenance.subject.is_some() {
            return Err(MemoryError::Invalid(
                "a fact about a subject cannot be tenant-wide".into(),
            ));
        }
        let mut fact = self.prepare(new, uuid::Uuid::now_v7().to_string(), now)?;
        fact.scope = Scope::Tenant;
        self.store(&fact).await?;
        Ok(fact)
    }

    /// The governed fact `new` becomes, with id `id`, without storing it: PII-screened (an error
    /// if the policy rejects it), in review if its source is trusted less than the threshold, with
    /// its class's TTL and freshness window. No I/O.
    pub fn prepare(
        &self,
        new: NewFact,
        id: String,
        now: DateTime<Utc>,
    ) -> Result<Fact, MemoryError> {
        let tenant = new.provenance.tenant.clone();
        if tenant.is_empty() {
            return Err(MemoryError::Invalid("a fact needs a tenant".into()));
        }
        let class = self.policy.class(&new.volatility)?;
        let screened = pii::screen(&new.text, &self.policy);
        if let Some(kinds) = screened.rejected() {
            return Err(MemoryError::PiiRejected { kinds });
        }
        let status = if new.provenance.trust < self.policy.review_below {
            Status::Review
        } else {
            Status::Active
        };
        let fact = Fact {
            id,
            tenant,
            subject: new.provenance.subject.clone(),
            text: screened.text,
            volatility: new.volatility,
            tier: Tier::Episodic,
            status,
            semantic_from: None,
            semantic_to: None,
            created_at: now,
            expires_at: Some(now + days(class.ttl_days)),
            fresh_until: Some(now + days(class.fresh_days)),
            provenance: new.provenance,
            pii: screened.actions,
            promoted_from: None,
            scope: Scope::Subject,
        };
        Ok(fact)
    }

    /// Embeds and stores a prepared fact. Storing a fact whose id is already stored is a no-op,
    /// so a retried write (after a crash) does not duplicate it.
    pub async fn store(&self, fact: &Fact) -> Result<(), MemoryError> {
        if self.store.get(&fact.tenant, &fact.id).await?.is_some() {
            return Ok(());
        }
        let v = self.embed_one(&fact.text).await?;
        self.store.insert(fact, &v, self.embedder.model()).await
    }

    async fn embed_one(&self, text: &str) -> Result<Vec<f32>, MemoryError> {
        self.embedder
            .embed(&[text.to_owned()])
            .await?
            .pop()
            .ok_or_else(|| MemoryError::Embedder {
                embedder: self.embedder.model().key(),
                detail: "returned no vector".into(),
            })
    }

    /// Retrieves for `q` at `now`.
    pub async fn retrieve(&self, q: &Query, now: DateTime<Utc>) -> Result<Retrieval, MemoryError> {
        let pinned = self.store.pinned().await?;
        check_model(&pinned, self.embedder.model())?;
        let version = match q.semantic_version {
            Some(v) => v,
            None => self.store.catalogue_version(&q.tenant).await?,
        };
        let v = self.embed_one(&q.text).await?;
        let found = self
            .store
            .search(
                &q.tenant,
                q.subject.as_deref(),
                &v,
                self.embedder.model(),
                q.k,
                now,
                version,
            )
            .await?;
        let hits = found
            .into_iter()
            .filter(|(_, s)| *s >= q.min_score)
            .map(|(fact, score)| {
                let age_secs = (now - fact.created_at).num_seconds().max(0);
                let stale = fact.fresh_until.is_some_and(|f| f <= now);
                Hit {
                    fact,
                    score,
                    age_secs,
                    stale,
                }
            })
            .collect();
        Ok(Retrieval {
            hits,
            memory_version: format!("{}#semantic-v{version}", pinned.key()),
        })
    }

    /// A reviewer's decision on a fact in review.
    pub async fn review(&self, tenant: &str, id: &str, approve: bool) -> Result<Fact, MemoryError> {
        let fact = self
            .store
            .get(tenant, id)
            .await?
            .ok_or_else(|| MemoryError::NotFound {
                tenant: tenant.into(),
                id: id.into(),
            })?;
        if fact.status != Status::Review {
            return Err(MemoryError::Invalid(format!(
                "memory {id} is {}, not in review",
                fact.status.as_str()
            )));
        }
        let to = if approve {
            Status::Active
        } else {
            Status::Rejected
        };
        self.store.set_status(tenant, id, to).await
    }

    /// Promotes an active episodic fact to the semantic tier (a human's act, named in `by`),
    /// optionally replacing earlier semantic facts; returns the semantic fact and its catalogue
    /// version.
    pub async fn promote(
        &self,
        tenant: &str,
        id: &str,
        by: &str,
        supersedes: &[String],
        now: DateTime<Utc>,
    ) -> Result<(Fact, CatalogueVersion), MemoryError> {
        let src = self
            .store
            .get(tenant, id)
            .await?
            .ok_or_else(|| MemoryError::NotFound {
                tenant: tenant.into(),
                id: id.into(),
            })?;
        if src.tier != Tier::Episodic || src.status != Status::Active {
            return Err(MemoryError::Invalid(format!(
                "only active episodic facts can be promoted; {id} is {} {}",
                src.status.as_str(),
                src.tier.as_str()
            )));
        }
        let mut fact = src.clone();
        fact.id = uuid::Uuid::now_v7().to_string();
        fact.tier = Tier::Semantic;
        fact.created_at = now;
        fact.expires_at = None;
        fact.fresh_until = None;
        fact.promoted_from = Some(src.id.clone());
        fact.provenance.source = format!("promoted by {by} from {}", src.id);
        fact.provenance.trust = Trust::Operator;
        fact.provenance.written_at = now;
        let v = self.embed_one(&fact.text).await?;
        let version = self
            .store
            .publish(&fact, &v, self.embedder.model(), supersedes)
            .await?;
        fact.semantic_from = Some(version);
        Ok((fact, version))
    }

    /// Every fact about `subject` in `tenant`, any tier and status (subject access).
    pub async fn subject_access(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Vec<Fact>, MemoryError> {
        self.store.list(tenant, Some(subject)).await
    }

    /// Erases every fact about `subject` in `tenant`, with its vectors.
    pub async fn erase_subject(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Vec<String>, MemoryError> {
        self.store.erase_subject(tenant, subject).await
    }

    /// Purges every tenant's facts expired at `now`; returns what it removed.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<Swept>, MemoryError> {
        self.store.sweep(now).await
    }

    /// Purges `tenant`'s facts expired at `now`, leaving other tenants' alone; returns what it
    /// removed.
    pub async fn sweep_tenant(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Swept>, MemoryError> {
        if tenant.is_empty() {
            return Err(MemoryError::Invalid("a tenant sweep needs a tenant".into()));
        }
        self.store.sweep_tenant(tenant, now).await
    }

    /// Re-embeds every fact with `to` into a side-by-side index, `batch` at a time, then switches
    /// atomically. Resumable: a crash leaves the old index serving and a rerun continues.
    pub async fn migrate(&self, to: &dyn Embedder, batch: usize) -> Result<usize, MemoryError> {
        let model = to.model().clone();
        let pinned = self.store.pinned().await?;
        if pinned == model {
            return Ok(0);
        }
        self.store.migration_start(&model).await?;
        let mut done = 0;
        loop {
            let pending = self.store.migration_pending(&model, batch.max(1)).await?;
            if pending.is_empty() {
                break;
            }
            let texts: Vec<String> = pending.iter().map(|(_, t)| t.clone()).collect();
            let vectors = to.embed(&texts).await?;
            let rows: Vec<(String, Vec<f32>)> =
                pending.into_iter().map(|(id, _)| id).zip(vectors).collect();
            done += rows.len();
            self.store.migration_put(&model, &rows).await?;
        }
        self.store.migration_switch(&model).await?;
        Ok(done)
    }
}
