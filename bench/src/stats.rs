//! Latency summaries shared by the parts that record their own requests (the flash sale,
//! the catalogue): an HDR histogram in microseconds and what the reports print of it.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

pub fn record(hist: &mut Histogram<u64>, took: Duration) {
    hist.saturating_record(took.as_micros().max(1) as u64);
}

/// Percentiles of one kind of request, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn of(hist: &Histogram<u64>) -> Latency {
        if hist.is_empty() {
            return Latency::default();
        }
        Latency {
            count: hist.len(),
            p50_us: hist.value_at_quantile(0.5),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
        }
    }

    /// "p50 / p99 / p99.9 / max" in milliseconds, for the Markdown tables.
    pub fn ms_row(&self) -> String {
        if self.count == 0 {
            return "-".into();
        }
        format!(
            "{} / {} / {} / {}",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )
    }
}

/// Microseconds as milliseconds with a precision that suits the value.
pub fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A lag from one event to another, in milliseconds (p50, p99, max) over `samples`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lag {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Lag {
    pub fn of(hist: &Histogram<u64>) -> Lag {
        if hist.is_empty() {
            return Lag::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Lag {
            samples: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.5)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
        }
    }

    pub fn ms_row(&self) -> String {
        if self.samples == 0 {
            return "-".into();
        }
        format!(
            "{:.1} / {:.1} / {:.1}",
            self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}
