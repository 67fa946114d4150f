//! Embedders: turn text into unit vectors, and say which model (and version) they are, so a store
//! can refuse a query embedded by another model. The default is all-MiniLM-L6-v2 run locally with
//! candle (`MiniLm`, feature `minilm`); [`OpenAiEmbedder`] talks to any OpenAI-compatible `/v1/embeddings`.

#[cfg(feature = "minilm")]
mod minilm;
mod openai;

#[cfg(feature = "minilm")]
pub use minilm::MiniLm;
pub use openai::OpenAiEmbedder;

use crate::error::MemoryError;
use crate::fact::EmbeddingModel;
use async_trait::async_trait;

/// Text in, L2-normalised vectors out (one per input, in order).
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The model these vectors come from.
    fn model(&self) -> &EmbeddingModel;
    /// Embeds a batch.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError>;
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}
