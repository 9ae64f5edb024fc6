//! The dashboard's files, embedded in the binary: `GET /` (the page), `/app.js`,
//! `/graph.js` and `/run.js` (the run page's workflow graph and step views) and
//! `/style.css`, from `assets/dashboard/`. No build step, nothing fetched from elsewhere.
//!
//! Owns: the bytes of those files and the headers they are served with (content
//! type, a Content-Security-Policy allowing only this origin, `no-store`).
//! Must not: hold or serve data. The page reads everything through the token-guarded API
//! (docs/api.md), so these routes need no token; that keeps the token out of the page's
//! own request and lets a browser open `/?token=...`, which the page moves into
//! `sessionStorage` at once.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::IntoResponse;
use axum::routing::get;

/// The page (`GET /`).
pub const INDEX_HTML: &str = include_str!("../../../assets/dashboard/index.html");
/// Its script (`GET /app.js`).
pub const APP_JS: &str = include_str!("../../../assets/dashboard/app.js");
/// The workflow graph of the run page (`GET /graph.js`).
pub const GRAPH_JS: &str = include_str!("../../../assets/dashboard/graph.js");
/// The run page's graph, step and decision views (`GET /run.js`).
pub const RUN_JS: &str = include_str!("../../../assets/dashboard/run.js");
/// Its stylesheet (`GET /style.css`).
pub const STYLE_CSS: &str = include_str!("../../../assets/dashboard/style.css");

/// Only this origin: no inline script, no inline style attribute, nothing from outside,
/// and the page may not be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The dashboard's routes, ready to be merged into the node's router (they take no state
/// and no token).
///
/// # Example
/// ```ignore
/// // in the node's router, beside the token-guarded /v1 routes:
/// let app = api_routes.merge(assets::router());
/// ```
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/index.html",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/graph.js",
            get(|| async { asset("text/javascript; charset=utf-8", GRAPH_JS) }),
        )
        .route(
            "/run.js",
            get(|| async { asset("text/javascript; charset=utf-8", RUN_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-store"),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_outside_the_node() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("graph.js", GRAPH_JS),
            ("run.js", RUN_JS),
            ("style.css", STYLE_CSS),
        ] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(needle) && !l.contains("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{name} refers to {needle}: {hits:?}");
            }
        }
    }

    #[test]
    fn server_strings_never_reach_inner_html() {
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            for (name, text) in [
                ("app.js", APP_JS),
                ("graph.js", GRAPH_JS),
                ("run.js", RUN_JS),
            ] {
                assert!(!text.contains(needle), "{name} uses {needle}");
            }
        }
    }
}
