//! The static assets (components/web/assets/, embedded by build.rs), served under
//! `/assets/<STAMP>/`. `STAMP` hashes every asset, so a URL names one exact content: it may
//! be cached for a year, and a new build changes every URL at once (relative imports
//! between modules included). Each asset also has an ETag, for revalidation.

use spin_sdk::http::Response;

/// One embedded file.
pub struct Asset {
    /// Its path under assets/, e.g. `app.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A quoted hash of its content.
    pub etag: &'static str,
    pub body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Where asset URLs start.
pub const PREFIX: &str = "/assets/";

/// The URL of the asset at `path` under assets/.
pub fn url(path: &str) -> String {
    format!("{PREFIX}{STAMP}/{path}")
}

/// The paths of the JavaScript modules (for `modulepreload`: the browser fetches them all at
/// once instead of one import at a time).
pub fn modules() -> impl Iterator<Item = &'static str> {
    ASSETS
        .iter()
        .map(|asset| asset.path)
        .filter(|path| path.ends_with(".js"))
}

/// Answers `/assets/<rest>`; `if_none_match` is the request's `If-None-Match`.
pub fn serve(rest: &str, if_none_match: Option<&str>) -> Response {
    let found = rest
        .strip_prefix(STAMP)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|path| ASSETS.iter().find(|asset| asset.path == path));
    let Some(asset) = found else {
        // An unknown file, or one of another build: the page that asked is stale.
        return crate::pages::not_found();
    };
    let mut response = Response::builder();
    response
        .header("etag", asset.etag)
        .header("cache-control", "public, max-age=31536000, immutable")
        .header("x-content-type-options", "nosniff");
    if if_none_match.is_some_and(|tags| matches(tags, asset.etag)) {
        return response.status(304).build();
    }
    response
        .status(200)
        .header("content-type", asset.content_type)
        .body(asset.body.to_vec())
        .build()
}

/// Whether an `If-None-Match` value (`*` or a list of tags, weak ones included) names `etag`.
fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        assert!(matches("\"abc\"", "\"abc\""));
        assert!(matches("\"x\", W/\"abc\"", "\"abc\""));
        assert!(matches("*", "\"abc\""));
        assert!(!matches("\"abd\"", "\"abc\""));
    }

    #[test]
    fn every_asset_has_a_media_type_and_content() {
        assert!(ASSETS.iter().any(|asset| asset.path == "app.js"));
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{}", asset.path);
            assert!(asset.etag.starts_with('"') && asset.etag.ends_with('"'));
        }
    }
}
