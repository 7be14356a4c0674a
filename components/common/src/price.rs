//! Ticket prices: a JSON number of dollars, greater than 0, below 1,000,000, in whole cents.

use serde::Serializer;

/// The highest price a ticket may have (exclusive).
pub const MAX_PRICE: f64 = 1_000_000.0;

/// Whether `price` is a valid ticket price: greater than 0, below 1,000,000, with at most two
/// decimals (whole cents).
pub fn is_valid_price(price: f64) -> bool {
    price.is_finite() && price > 0.0 && price < MAX_PRICE && decimal_places(price) <= 2
}

/// The number of decimals of `value` as written in JSON. Rust prints the shortest decimal
/// text that reads back as the same f64, which is the text the client sent for any price
/// of at most 15 significant digits, so counting its decimals is exact; multiplying by 100
/// would not be (0.29 * 100 is 28.999999999999996).
fn decimal_places(value: f64) -> usize {
    let text = value.to_string();
    text.split_once('.')
        .map_or(0, |(_, decimals)| decimals.len())
}

/// A price in integer cents, computed from its decimal text (the text the client sent, see
/// `decimal_places`), never from a float product: `20.1` is exactly 2010 cents. `None` for
/// a price that is not a valid ticket price.
pub fn to_cents(price: f64) -> Option<u64> {
    if !is_valid_price(price) {
        return None;
    }
    let text = price.to_string();
    let (dollars, decimals) = text.split_once('.').unwrap_or((&text, ""));
    // At most two decimals (checked above): "1" is 10 cents, "01" is 1 cent.
    let cents = format!("{decimals:0<2}");
    Some(dollars.parse::<u64>().ok()? * 100 + cents.parse::<u64>().ok()?)
}

/// Writes a price as the client sent it: `20` stays `20` (not `20.0`), `20.5` stays `20.5`.
/// Use with `#[serde(serialize_with = "ticketing_common::price::serialize")]`.
pub fn serialize<S: Serializer>(price: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    // Every whole valid price fits an i64 exactly.
    if price.fract() == 0.0 && price.abs() < MAX_PRICE {
        serializer.serialize_i64(*price as i64)
    } else {
        serializer.serialize_f64(*price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[test]
    fn prices_are_positive_below_a_million_with_cents_at_most() {
        for price in [0.01, 0.29, 1.0, 10.5, 19.99, 999_999.99, 42.0] {
            assert!(is_valid_price(price), "{price}");
        }
        for price in [
            0.0,
            -10.0,
            -0.01,
            0.001,
            10.999,
            1_000_000.0,
            1_000_000.01,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert!(!is_valid_price(price), "{price}");
        }
    }

    #[test]
    fn cents_are_exact_for_every_valid_price() {
        let cases = [
            (0.01, 1),
            (0.1, 10),
            (0.29, 29),
            (1.0, 100),
            (10.0, 1000),
            (19.99, 1999),
            (20.1, 2010),
            (999_999.99, 99_999_999),
        ];
        for (price, cents) in cases {
            assert_eq!(to_cents(price), Some(cents), "{price}");
        }
        // Every price from 0.01 to 99.99, as a client would write it.
        for cents in 1..10_000u64 {
            let price: f64 = format!("{}.{:02}", cents / 100, cents % 100)
                .parse()
                .unwrap();
            assert_eq!(to_cents(price), Some(cents), "{price}");
        }
    }

    #[test]
    fn invalid_prices_have_no_cents() {
        for price in [0.0, -1.0, 0.001, 1_000_000.0, f64::NAN] {
            assert_eq!(to_cents(price), None, "{price}");
        }
    }

    #[derive(Serialize)]
    struct Priced {
        #[serde(serialize_with = "serialize")]
        price: f64,
    }

    #[test]
    fn whole_prices_are_written_as_integers() {
        let json = |price| serde_json::to_string(&Priced { price }).unwrap();
        assert_eq!(json(20.0), r#"{"price":20}"#);
        assert_eq!(json(20.5), r#"{"price":20.5}"#);
        assert_eq!(json(0.29), r#"{"price":0.29}"#);
        assert_eq!(json(999_999.99), r#"{"price":999999.99}"#);
    }
}
