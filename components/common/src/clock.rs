//! The wall clock, as the services use it: unix milliseconds (order expiry times, claim and
//! journal times). Comparing it across hosts assumes their clocks roughly agree (NTP).

use anyhow::Context as _;

use crate::errors::ApiError;

/// Milliseconds since the unix epoch.
pub fn now_ms() -> Result<i64, ApiError> {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    Ok(i64::try_from(elapsed.as_millis()).context("the clock is far in the future")?)
}
