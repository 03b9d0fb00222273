//! The clock the page shows: the current time in one configured IANA time zone.
//!
//! Why a named zone rather than the container's local time: pods run in UTC whatever the
//! audience, and the labs' page showed Moscow time, so the zone is a setting (default
//! `Europe/Moscow`) checked at start-up. The time zone database is compiled into the binary
//! (jiff's `tzdb-bundle-always`), so a scratch or distroless image without
//! `/usr/share/zoneinfo` still knows every zone; a system copy is preferred when present.

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Reads the current time in one time zone.
#[derive(Debug, Clone)]
pub struct Clock {
    zone: TimeZone,
    name: String,
}

/// The configured time zone is not in the time zone database.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown time zone {name:?} ({cause}): use an IANA name such as Europe/Moscow, UTC or \
     America/New_York"
)]
pub struct UnknownTimeZone {
    /// What was configured.
    pub name: String,
    /// jiff's explanation.
    pub cause: jiff::Error,
}

impl Clock {
    /// A clock for the IANA zone `name`.
    pub fn new(name: &str) -> Result<Self, UnknownTimeZone> {
        let zone = TimeZone::get(name).map_err(|cause| UnknownTimeZone {
            name: name.to_owned(),
            cause,
        })?;
        Ok(Self {
            name: zone.iana_name().unwrap_or(name).to_owned(),
            zone,
        })
    }

    /// The zone's IANA name.
    pub fn zone_name(&self) -> &str {
        &self.name
    }

    /// Now, in the zone.
    pub fn now(&self) -> Zoned {
        self.at(Timestamp::now())
    }

    /// `instant`, in the zone.
    pub fn at(&self, instant: Timestamp) -> Zoned {
        instant.to_zoned(self.zone.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moscow_is_utc_plus_three() {
        let clock = Clock::new("Europe/Moscow").unwrap();
        let instant: Timestamp = "2024-01-15T09:30:00Z".parse().unwrap();
        let time = clock.at(instant);
        assert_eq!(time.strftime("%H:%M %:z").to_string(), "12:30 +03:00");
        assert_eq!(clock.zone_name(), "Europe/Moscow");
    }

    #[test]
    fn unknown_zone_is_refused_by_name() {
        let error = Clock::new("Mars/Olympus_Mons").unwrap_err();
        assert!(error.to_string().contains("Mars/Olympus_Mons"), "{error}");
    }
}
