//! Medians, percentiles and rates for the ratios report.

use std::time::Duration;

/// The median of `samples` (the mean of the middle two for an even count); 0 when
/// empty. Sorts `samples`.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => samples.get(n / 2).copied().unwrap_or(0.0),
        _ => {
            let low = samples.get(n / 2 - 1).copied().unwrap_or(0.0);
            let high = samples.get(n / 2).copied().unwrap_or(0.0);
            (low + high) / 2.0
        }
    }
}

/// The `p`-th percentile (0 to 100, nearest rank) of `samples`, which must be
/// sorted; 0 when empty.
pub fn percentile_sorted(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    let index = rank.clamp(1, samples.len()) - 1;
    samples.get(index).copied().unwrap_or(0.0)
}

/// `amount` per second over `elapsed`.
pub fn per_second(amount: u64, elapsed: Duration) -> f64 {
    amount as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A rate with an SI prefix and `unit`: `9.1 M rec/s`, `2.1 GB/s` (decimal units).
pub fn rate(value: f64, unit: &str) -> String {
    let (scaled, prefix) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    if prefix.is_empty() {
        format!("{scaled:.1} {unit}")
    } else if unit.starts_with('B') {
        format!("{scaled:.2} {prefix}{unit}")
    } else {
        format!("{scaled:.2} {prefix} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&sorted, 50.0), 50.0);
        assert_eq!(percentile_sorted(&sorted, 99.0), 99.0);
        assert_eq!(percentile_sorted(&sorted, 0.0), 1.0);
    }

    #[test]
    fn rates_read_well() {
        assert_eq!(rate(9.1e6, "rec/s"), "9.10 M rec/s");
        assert_eq!(rate(2.1e9, "B/s"), "2.10 GB/s");
        assert_eq!(rate(512.0, "rec/s"), "512.0 rec/s");
    }
}
