//! Medians with min and max over repetitions, and ratios between them.

/// Median, min and max of the repetitions of one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest repetition.
    pub min: f64,
    /// Largest repetition.
    pub max: f64,
    /// Repetitions.
    pub n: usize,
}

impl Stat {
    /// The statistics of the finite values in `values` (`None` when there are none).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if !n.is_multiple_of(2) {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// `median [min–max]` with `digits` significant-ish decimals.
    pub fn cell(&self, digits: usize) -> String {
        if self.n == 1 || self.min == self.max {
            return fmt_num(self.median, digits);
        }
        format!(
            "{} [{}–{}]",
            fmt_num(self.median, digits),
            fmt_num(self.min, digits),
            fmt_num(self.max, digits)
        )
    }
}

/// `a / b` when both exist and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// A ratio as `1.23×`, or `–`.
pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_string(), |r| format!("{r:.2}×"))
}

/// A number with `digits` decimals; from 1,000 up a whole number with grouped thousands.
pub fn fmt_num(x: f64, digits: usize) -> String {
    if x.abs() >= 1_000.0 {
        let rounded = x.round() as i64;
        let s = rounded.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if rounded < 0 {
            out.insert(0, '-');
        }
        out
    } else {
        format!("{x:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_min_max_and_ratios() {
        let s = Stat::of([3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stat::of([1.0, 2.0, 4.0, 10.0]).unwrap().median, 3.0);
        assert!(Stat::of([]).is_none());
        assert_eq!(s.cell(1), "2.0 [1.0–3.0]");
        assert_eq!(Stat::of([5.0]).unwrap().cell(2), "5.00");
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(fmt_ratio(None), "–");
        assert_eq!(fmt_num(1234567.4, 1), "1,234,567");
        assert_eq!(fmt_num(12.345, 2), "12.35");
    }
}
