//! The embedded vector index: vectors in one contiguous `Vec<f32>`, searched exactly (a
//! cache-friendly scan with a bounded heap) while small, and through an inverted-file layer (IVF:
//! k-means centroids over a sample, each vector filed under its nearest centroid, a query scans
//! the `nprobe` nearest lists) once it is large. Chosen by benchmark over pure-Rust HNSW: see
//! docs/decisions/032-embedded-vector-index.md and `keel bench memory`.
//!
//! Vectors are unit length, so the score is the dot product (cosine similarity). The index holds
//! ids only; what a fact says and whether it may be returned lives in the store.

use rand::SeedableRng;
use rand::seq::IndexedRandom;
use std::collections::{BinaryHeap, HashMap};

/// Above this many vectors the index trains an IVF layer.
pub const IVF_THRESHOLD: usize = 50_000;

/// Dot product with eight independent accumulators (vectorises without target flags).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[derive(PartialEq)]
struct Scored(f32, u32);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    // Reversed, so the heap's top is the worst kept score.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
    }
}

struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }
    #[inline]
    fn push(&mut self, score: f32, slot: u32) {
        if self.heap.len() < self.k {
            self.heap.push(Scored(score, slot));
        } else if self.heap.peek().is_some_and(|w| score > w.0) {
            self.heap.pop();
            self.heap.push(Scored(score, slot));
        }
    }
    fn into_sorted(self) -> Vec<(u32, f32)> {
        let mut v: Vec<(u32, f32)> = self.heap.into_iter().map(|s| (s.1, s.0)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

struct Ivf {
    centroids: Vec<f32>,
    lists: Vec<Vec<u32>>,
    /// Slot -> (list, position in list), for removal.
    at: Vec<(u32, u32)>,
}

/// An in-memory vector index over unit vectors of one dimension.
pub struct VectorIndex {
    dim: usize,
    data: Vec<f32>,
    ids: Vec<String>,
    slot_of: HashMap<String, u32>,
    ivf: Option<Ivf>,
    /// Lists a query scans when the IVF layer is on.
    pub nprobe: usize,
}

impl VectorIndex {
    /// An empty index.
    pub fn new(dim: usize) -> Self {
        VectorIndex {
            dim,
            data: Vec::new(),
            ids: Vec::new(),
            slot_of: HashMap::new(),
            ivf: None,
            nprobe: 24,
        }
    }

    /// Dimensions.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// True if the IVF layer is on.
    pub fn is_ivf(&self) -> bool {
        self.ivf.is_some()
    }

    fn row(&self, slot: u32) -> &[f32] {
        let s = slot as usize * self.dim;
        &self.data[s..s + self.dim]
    }

    /// Adds (or replaces) `id`. `v` must have `dim` values.
    pub fn insert(&mut self, id: &str, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        self.remove(id);
        let slot = self.ids.len() as u32;
        self.data.extend_from_slice(v);
        self.ids.push(id.to_owned());
        self.slot_of.insert(id.to_owned(), slot);
        if let Some(ivf) = &mut self.ivf {
            let list = nearest(&ivf.centroids, self.dim, v);
            ivf.at.push((list as u32, ivf.lists[list].len() as u32));
            ivf.lists[list].push(slot);
        } else if self.ids.len() >= IVF_THRESHOLD {
            self.train(1);
        }
    }

    /// Removes `id` if present.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(slot) = self.slot_of.remove(id) else {
            return false;
        };
        let last = (self.ids.len() - 1) as u32;
        if let Some(ivf) = &mut self.ivf {
            let (list, pos) = ivf.at[slot as usize];
            let l = &mut ivf.lists[list as usize];
            l.swap_remove(pos as usize);
            if let Some(&moved) = l.get(pos as usize) {
                ivf.at[moved as usize].1 = pos;
            }
            // The last slot moves into `slot`: fix its list entry.
            if slot != last {
                let (ll, lp) = ivf.at[last as usize];
                ivf.lists[ll as usize][lp as usize] = slot;
                ivf.at[slot as usize] = (ll, lp);
            }
            ivf.at.pop();
        }
        if slot != last {
            let (s, l, d) = (slot as usize * self.dim, last as usize * self.dim, self.dim);
            self.data.copy_within(l..l + d, s);
            self.ids.swap(slot as usize, last as usize);
            self.slot_of.insert(self.ids[slot as usize].clone(), slot);
        }
        self.data.truncate(last as usize * self.dim);
        self.ids.pop();
        true
    }

    /// (Re)builds the IVF layer: about √n centroids (at least 16) from a k-means over a sample.
    pub fn train(&mut self, seed: u64) {
        let n = self.len();
        if n == 0 {
            self.ivf = None;
            return;
        }
        let nlist = ((n as f64).sqrt() as usize).clamp(16, 4096).min(n);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let all: Vec<u32> = (0..n as u32).collect();
        let sample: Vec<u32> = all
            .choose_multiple(&mut rng, (nlist * 24).min(n))
            .copied()
            .collect();
        let mut centroids: Vec<f32> = Vec::with_capacity(nlist * self.dim);
        for &s in sample.iter().take(nlist) {
            centroids.extend_from_slice(self.row(s));
        }
        for _ in 0..6 {
            let mut sums = vec![0.0f32; nlist * self.dim];
            let mut counts = vec![0usize; nlist];
            for &s in &sample {
                let v = self.row(s);
                let c = nearest(&centroids, self.dim, v);
                counts[c] += 1;
                for (a, b) in sums[c * self.dim..(c + 1) * self.dim].iter_mut().zip(v) {
                    *a += b;
                }
            }
            for c in 0..nlist {
                if counts[c] > 0 {
                    let row = &mut sums[c * self.dim..(c + 1) * self.dim];
                    crate::embed::normalize(row);
                    centroids[c * self.dim..(c + 1) * self.dim].copy_from_slice(row);
                }
            }
        }
        // Filing every vector under its nearest centroid is the expensive part: split it across
        // the machine's cores.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = n.div_ceil(threads).max(1);
        let (dim, data, cents) = (self.dim, &self.data, &centroids);
        let nearest_of: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .step_by(chunk)
                .map(|start| {
                    let end = (start + chunk).min(n);
                    scope.spawn(move || {
                        (start..end)
                            .map(|i| nearest(cents, dim, &data[i * dim..(i + 1) * dim]))
                            .collect::<Vec<usize>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut lists = vec![Vec::new(); nlist];
        let mut at = Vec::with_capacity(n);
        for (slot, &c) in nearest_of.iter().enumerate() {
            at.push((c as u32, lists[c].len() as u32));
            lists[c].push(slot as u32);
        }
        self.ivf = Some(Ivf {
            centroids,
            lists,
            at,
        });
    }

    /// Exact top-`k` by a full scan, best first.
    pub fn search_exact(&self, q: &[f32], k: usize) -> Vec<(&str, f32)> {
        let mut top = TopK::new(k);
        for (slot, row) in self.data.chunks_exact(self.dim).enumerate() {
            top.push(dot(q, row), slot as u32);
        }
        self.named(top)
    }

    /// Top-`k`, best first: through the IVF layer if it is on, else exact.
    pub fn search(&self, q: &[f32], k: usize) -> Vec<(&str, f32)> {
        let Some(ivf) = &self.ivf else {
            return self.search_exact(q, k);
        };
        let nlist = ivf.lists.len();
        let mut near = TopK::new(self.nprobe.min(nlist));
        for c in 0..nlist {
            near.push(
                dot(q, &ivf.centroids[c * self.dim..(c + 1) * self.dim]),
                c as u32,
            );
        }
        let mut top = TopK::new(k);
        for (c, _) in near.into_sorted() {
            for &slot in &ivf.lists[c as usize] {
                top.push(dot(q, self.row(slot)), slot);
            }
        }
        self.named(top)
    }

    fn named(&self, top: TopK) -> Vec<(&str, f32)> {
        top.into_sorted()
            .into_iter()
            .map(|(slot, s)| (self.ids[slot as usize].as_str(), s))
            .collect()
    }
}

fn nearest(centroids: &[f32], dim: usize, v: &[f32]) -> usize {
    let mut best = (f32::NEG_INFINITY, 0);
    for (c, row) in centroids.chunks_exact(dim).enumerate() {
        let s = dot(v, row);
        if s > best.0 {
            best = (s, c);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    //! Synthetic vectors are allowed here: these are the index's own tests.
    use super::*;
    use rand::Rng;

    fn unit(rng: &mut impl Rng, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        crate::embed::normalize(&mut v);
        v
    }

    #[test]
    fn exact_finds_itself_first_and_remove_keeps_ids_straight() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut idx = VectorIndex::new(16);
        let vs: Vec<Vec<f32>> = (0..100).map(|_| unit(&mut rng, 16)).collect();
        for (i, v) in vs.iter().enumerate() {
            idx.insert(&format!("f{i}"), v);
        }
        assert_eq!(idx.search(&vs[42], 1)[0].0, "f42");
        assert!(idx.remove("f42"));
        assert!(!idx.remove("f42"));
        assert_ne!(idx.search(&vs[42], 1)[0].0, "f42");
        assert_eq!(idx.search(&vs[99], 1)[0].0, "f99");
        assert_eq!(idx.len(), 99);
    }

    #[test]
    fn ivf_layer_survives_inserts_and_removes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut idx = VectorIndex::new(8);
        let vs: Vec<Vec<f32>> = (0..2000).map(|_| unit(&mut rng, 8)).collect();
        for (i, v) in vs.iter().enumerate() {
            idx.insert(&format!("f{i}"), v);
        }
        idx.train(3);
        idx.nprobe = 1000;
        for i in (0..2000).step_by(3) {
            idx.remove(&format!("f{i}"));
        }
        idx.insert("new", &vs[0]);
        for i in [1usize, 2, 4, 5, 1999] {
            assert_eq!(idx.search(&vs[i], 1)[0].0, format!("f{i}"));
        }
        assert_eq!(idx.search(&vs[0], 1)[0].0, "new");
        assert_eq!(idx.search(&vs[7], 5), idx.search_exact(&vs[7], 5));
    }
}
