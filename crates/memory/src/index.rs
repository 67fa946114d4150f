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

struct List {
    /// Slot of each row.
    slots: Vec<u32>,
    /// The rows, contiguous, so a probed list is one sequential scan.
    data: Vec<f32>,
}

struct Ivf {
    centroids: Vec<f32>,
    lists: Vec<List>,
    /// Slot -> (list, row in list).
    at: Vec<(u32, u32)>,
    /// Vectors when trained: the layer is retrained when the index has grown fourfold, so the
    /// number of lists stays near √n.
    trained_at: usize,
}

/// An in-memory vector index over unit vectors of one dimension. Without the IVF layer the rows
/// live in one contiguous array; with it, in their lists (each contiguous).
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
            nprobe: 48,
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
        let d = self.dim;
        match &self.ivf {
            None => &self.data[slot as usize * d..(slot as usize + 1) * d],
            Some(ivf) => {
                let (l, p) = ivf.at[slot as usize];
                &ivf.lists[l as usize].data[p as usize * d..(p as usize + 1) * d]
            }
        }
    }

    /// Adds (or replaces) `id`. `v` must have `dim` values.
    pub fn insert(&mut self, id: &str, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        self.remove(id);
        let slot = self.ids.len() as u32;
        self.ids.push(id.to_owned());
        self.slot_of.insert(id.to_owned(), slot);
        match &mut self.ivf {
            Some(ivf) => {
                let l = nearest(&ivf.centroids, self.dim, v);
                let list = &mut ivf.lists[l];
                ivf.at.push((l as u32, list.slots.len() as u32));
                list.slots.push(slot);
                list.data.extend_from_slice(v);
                if self.ids.len() >= ivf.trained_at * 4 {
                    self.train(1);
                }
            }
            None => {
                self.data.extend_from_slice(v);
                if self.ids.len() >= IVF_THRESHOLD {
                    self.train(1);
                }
            }
        }
    }

    /// Removes `id` if present.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(slot) = self.slot_of.remove(id) else {
            return false;
        };
        let d = self.dim;
        let last = (self.ids.len() - 1) as u32;
        match &mut self.ivf {
            Some(ivf) => {
                // Swap-remove the row inside its list.
                let (l, p) = ivf.at[slot as usize];
                let list = &mut ivf.lists[l as usize];
                let tail = list.slots.len() - 1;
                list.slots.swap_remove(p as usize);
                if (p as usize) < tail {
                    list.data
                        .copy_within(tail * d..(tail + 1) * d, p as usize * d);
                    let moved = list.slots[p as usize];
                    ivf.at[moved as usize] = (l, p);
                }
                list.data.truncate(tail * d);
                // Renumber: the last slot takes `slot`'s number.
                if slot != last {
                    let (ll, lp) = ivf.at[last as usize];
                    ivf.lists[ll as usize].slots[lp as usize] = slot;
                    ivf.at[slot as usize] = (ll, lp);
                }
                ivf.at.pop();
            }
            None => {
                if slot != last {
                    let (s, l) = (slot as usize * d, last as usize * d);
                    self.data.copy_within(l..l + d, s);
                }
                self.data.truncate(last as usize * d);
            }
        }
        if slot != last {
            self.ids.swap(slot as usize, last as usize);
            self.slot_of.insert(self.ids[slot as usize].clone(), slot);
        }
        self.ids.pop();
        true
    }

    /// The rows in slot order (moves them out of the lists if the IVF layer is on).
    fn flat(&mut self) -> Vec<f32> {
        if self.ivf.is_none() {
            return std::mem::take(&mut self.data);
        }
        let mut out = Vec::with_capacity(self.len() * self.dim);
        for slot in 0..self.len() as u32 {
            out.extend_from_slice(self.row(slot));
        }
        self.ivf = None;
        out
    }

    /// (Re)builds the IVF layer: about √n centroids (at least 16) from a k-means over a sample.
    pub fn train(&mut self, seed: u64) {
        let flat = self.flat();
        let n = self.len();
        let dim = self.dim;
        if n == 0 {
            self.data = flat;
            return;
        }
        let row = |s: u32| &flat[s as usize * dim..(s as usize + 1) * dim];
        let nlist = ((n as f64).sqrt() as usize).clamp(16, 4096).min(n);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let all: Vec<u32> = (0..n as u32).collect();
        let sample: Vec<u32> = all
            .choose_multiple(&mut rng, (nlist * 24).min(n))
            .copied()
            .collect();
        let mut centroids: Vec<f32> = Vec::with_capacity(nlist * dim);
        for &s in sample.iter().take(nlist) {
            centroids.extend_from_slice(row(s));
        }
        for _ in 0..6 {
            let mut sums = vec![0.0f32; nlist * dim];
            let mut counts = vec![0usize; nlist];
            for &s in &sample {
                let v = row(s);
                let c = nearest(&centroids, dim, v);
                counts[c] += 1;
                for (a, b) in sums[c * dim..(c + 1) * dim].iter_mut().zip(v) {
                    *a += b;
                }
            }
            for c in 0..nlist {
                if counts[c] > 0 {
                    let r = &mut sums[c * dim..(c + 1) * dim];
                    crate::embed::normalize(r);
                    centroids[c * dim..(c + 1) * dim].copy_from_slice(r);
                }
            }
        }
        // Filing every vector under its nearest centroid is the expensive part: split it across
        // the machine's cores.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = n.div_ceil(threads).max(1);
        let (data, cents) = (&flat, &centroids);
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
        let mut lists: Vec<List> = (0..nlist)
            .map(|_| List {
                slots: Vec::new(),
                data: Vec::new(),
            })
            .collect();
        let mut at = Vec::with_capacity(n);
        for (slot, &c) in nearest_of.iter().enumerate() {
            let list = &mut lists[c];
            at.push((c as u32, list.slots.len() as u32));
            list.slots.push(slot as u32);
            list.data.extend_from_slice(row(slot as u32));
        }
        self.ivf = Some(Ivf {
            centroids,
            lists,
            at,
            trained_at: n,
        });
    }

    /// Exact top-`k` by a full scan, best first.
    pub fn search_exact(&self, q: &[f32], k: usize) -> Vec<(&str, f32)> {
        let mut top = TopK::new(k);
        match &self.ivf {
            None => {
                for (slot, row) in self.data.chunks_exact(self.dim).enumerate() {
                    top.push(dot(q, row), slot as u32);
                }
            }
            Some(ivf) => {
                for list in &ivf.lists {
                    for (row, &slot) in list.data.chunks_exact(self.dim).zip(&list.slots) {
                        top.push(dot(q, row), slot);
                    }
                }
            }
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
        for (c, centroid) in ivf.centroids.chunks_exact(self.dim).enumerate() {
            near.push(dot(q, centroid), c as u32);
        }
        let mut top = TopK::new(k);
        for (c, _) in near.into_sorted() {
            let list = &ivf.lists[c as usize];
            for (row, &slot) in list.data.chunks_exact(self.dim).zip(&list.slots) {
                top.push(dot(q, row), slot);
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
