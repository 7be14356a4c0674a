//! The wall clock, as the services use it: unix milliseconds (order expiry times, claim and
//! journal times), and RFC 3339 times read as such. Comparing it across hosts assumes their clocks roughly agree (NTP).

use anyhow::Context as _;

use crate::errors::ApiError;

/// Milliseconds since the unix epoch.
pub fn now_ms() -> Result<i64, ApiError> {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    Ok(i64::try_from(elapsed.as_millis()).context("the clock is far in the future")?)
}

/// Unix milliseconds of an RFC 3339 time (`2026-11-25T12:00:00.000Z`); `None` if it is not
/// one. A time before 1970 is negative.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_are_read_as_unix_milliseconds() {
        // 2026-11-25T12:00:00Z
        let noon = 1_795_608_000_000;
        assert_eq!(rfc3339_ms("2026-11-25T12:00:00Z"), Some(noon));
        assert_eq!(rfc3339_ms("2026-11-25T12:00:00.123Z"), Some(noon + 123));
        assert_eq!(rfc3339_ms("2026-11-25T13:00:00+01:00"), Some(noon));
        assert_eq!(rfc3339_ms("1969-12-31T23:59:59Z"), Some(-1000));
        for bad in ["", "tomorrow", "2026-11-25", "1795608000000"] {
            assert_eq!(rfc3339_ms(bad), None, "{bad:?}");
        }
    }
}
