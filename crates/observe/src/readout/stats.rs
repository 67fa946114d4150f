//! The statistics of a readout, pure: a ratio of sums (cost over successes, successes over
//! executions) with its delta-method standard error, clustered by the unit of assignment, and the
//! normal interval of a difference between two arms.
//!
//! Why the delta method: cost-per-success is `Σcost / Σsuccess`, not a mean of per-execution
//! ratios, and when the unit of assignment is a subject or a tenant its executions are not
//! independent. Summing per unit first and linearising the ratio (Deng et al., KDD 2018) gives
//! `Var(R) ≈ (s²ₓ − 2R·sₓᵧ + R²·s²ᵧ) / (n·ȳ²)` over the `n` units' totals `(xᵢ, yᵢ)`. The tests
//! check it against a bootstrap and check its coverage by simulation.

/// The two-sided 95 % normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// One unit's totals: numerator and denominator summed over its executions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnitTotals {
    /// Σ numerator (cost, or successes).
    pub num: f64,
    /// Σ denominator (successes, or executions).
    pub den: f64,
}

/// A ratio of sums and its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    /// `Σnum / Σden`.
    pub value: f64,
    /// Delta-method standard error; `None` with fewer than two units.
    pub se: Option<f64>,
    /// Units it was computed over.
    pub units: usize,
}

impl Ratio {
    /// The 95 % interval, when there is a standard error.
    pub fn interval(&self) -> Option<(f64, f64)> {
        self.se
            .map(|se| (self.value - Z95 * se, self.value + Z95 * se))
    }
}

/// `Σnum / Σden` over `units`, with its delta-method standard error. `None` when the
/// denominator sums to zero (no success: no cost per success).
pub fn ratio(units: &[UnitTotals]) -> Option<Ratio> {
    let n = units.len();
    let (sx, sy) = units
        .iter()
        .fold((0.0, 0.0), |(a, b), u| (a + u.num, b + u.den));
    if n == 0 || sy <= 0.0 {
        return None;
    }
    let value = sx / sy;
    if n < 2 {
        return Some(Ratio {
            value,
            se: None,
            units: n,
        });
    }
    let nf = n as f64;
    let (mx, my) = (sx / nf, sy / nf);
    let (mut vxx, mut vyy, mut vxy) = (0.0, 0.0, 0.0);
    for u in units {
        let (dx, dy) = (u.num - mx, u.den - my);
        vxx += dx * dx;
        vyy += dy * dy;
        vxy += dx * dy;
    }
    let d = nf - 1.0;
    let (vxx, vyy, vxy) = (vxx / d, vyy / d, vxy / d);
    let var = (vxx - 2.0 * value * vxy + value * value * vyy) / (nf * my * my);
    Some(Ratio {
        value,
        se: Some(var.max(0.0).sqrt()),
        units: n,
    })
}

/// `a − b` and its 95 % interval, the arms being independent samples.
pub fn difference(a: &Ratio, b: &Ratio) -> (f64, Option<(f64, f64)>) {
    let d = a.value - b.value;
    let ci = match (a.se, b.se) {
        (Some(x), Some(y)) => {
            let se = (x * x + y * y).sqrt();
            Some((d - Z95 * se, d + Z95 * se))
        }
        _ => None,
    };
    (d, ci)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small seeded generator (SplitMix64): the tests' draws are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// One execution: cost ~ uniform(0, 2·mean_cost), success with probability `p`.
    fn population(rng: &mut Rng, units: usize, mean_cost: f64, p: f64) -> Vec<UnitTotals> {
        (0..units)
            .map(|_| {
                // 1 to 3 executions per unit, as with subjects.
                let k = 1 + rng.below(3);
                let mut t = UnitTotals { num: 0.0, den: 0.0 };
                for _ in 0..k {
                    t.num += rng.unit() * 2.0 * mean_cost;
                    t.den += f64::from(u8::from(rng.unit() < p));
                }
                t
            })
            .collect()
    }

    #[test]
    fn hand_computed_values() {
        // Units (cost, successes): (3, 1), (1, 1), (2, 0), (6, 2). R = 12 / 4 = 3.
        let u = [(3.0, 1.0), (1.0, 1.0), (2.0, 0.0), (6.0, 2.0)]
            .map(|(num, den)| UnitTotals { num, den });
        let r = ratio(&u).unwrap();
        assert_eq!(r.value, 3.0);
        // x̄ = 3, ȳ = 1; s²ₓ = (0 + 4 + 1 + 9)/3 = 14/3, s²ᵧ = (0 + 0 + 1 + 1)/3 = 2/3,
        // sₓᵧ = (0 + 0 + 1 + 3)/3 = 4/3; Var = (14/3 − 2·3·4/3 + 9·2/3)/(4·1) = (8/3)/4 = 2/3.
        let se = r.se.unwrap();
        assert!((se - (2.0f64 / 3.0).sqrt()).abs() < 1e-12, "{se}");
        assert_eq!(ratio(&[UnitTotals { num: 1.0, den: 0.0 }]), None);
        let one = ratio(&[UnitTotals { num: 2.0, den: 1.0 }]).unwrap();
        assert_eq!((one.value, one.se), (2.0, None));
    }

    #[test]
    fn the_delta_method_agrees_with_a_bootstrap() {
        let mut rng = Rng(42);
        let units = population(&mut rng, 400, 0.05, 0.6);
        let delta = ratio(&units).unwrap().se.unwrap();
        let mut estimates = Vec::new();
        for _ in 0..2_000 {
            let resample: Vec<UnitTotals> = (0..units.len())
                .map(|_| units[rng.below(units.len() as u64) as usize])
                .collect();
            if let Some(r) = ratio(&resample) {
                estimates.push(r.value);
            }
        }
        let m = estimates.iter().sum::<f64>() / estimates.len() as f64;
        let boot = (estimates.iter().map(|e| (e - m) * (e - m)).sum::<f64>()
            / (estimates.len() - 1) as f64)
            .sqrt();
        let rel = (delta - boot).abs() / boot;
        assert!(rel < 0.1, "delta {delta} vs bootstrap {boot}");
    }

    #[test]
    fn intervals_narrow_as_the_sample_grows() {
        let mut widths = Vec::new();
        for n in [100, 400, 1_600, 6_400] {
            let mut rng = Rng(7);
            let r = ratio(&population(&mut rng, n, 0.05, 0.6)).unwrap();
            let (lo, hi) = r.interval().unwrap();
            widths.push(hi - lo);
        }
        for w in widths.windows(2) {
            assert!(w[1] < w[0], "{widths:?}");
        }
        // About 1/√n: four times the units, about half the width.
        let shrink = widths[3] / widths[2];
        assert!((0.4..0.6).contains(&shrink), "{widths:?}");
    }

    #[test]
    fn the_interval_of_a_difference_covers_the_truth_at_its_nominal_rate() {
        // Arm A: mean cost 0.04, success 0.5 → true cost per success 0.08 (per execution, the
        // unit size is independent of both). Arm B: 0.06 and 0.6 → 0.1. Truth: A − B = −0.02.
        let truth = 0.04 / 0.5 - 0.06 / 0.6;
        let mut rng = Rng(2026);
        let sims = 1_000;
        let mut covered = 0;
        for _ in 0..sims {
            let a = ratio(&population(&mut rng, 300, 0.04, 0.5)).unwrap();
            let b = ratio(&population(&mut rng, 300, 0.06, 0.6)).unwrap();
            let (_, ci) = difference(&a, &b);
            let (lo, hi) = ci.unwrap();
            if lo <= truth && truth <= hi {
                covered += 1;
            }
        }
        let rate = f64::from(covered) / f64::from(sims);
        // 95 % nominal; with 1 000 simulations the binomial s.e. is 0.7 %.
        assert!((0.93..=0.97).contains(&rate), "coverage {rate}");
    }
}
