//! The dashboard's files, embedded in the binary: `GET /` (the page), its scripts
//! (`/app.js`; `/graph.js` and `/run.js`, the run page's graph and step views; `/llm.js`,
//! the model calls; `/actions.js`, start, cancel, retry and filters; `/metrics.js`, the
//! metrics view) and `/style.css`, from `assets/dashboard/`. No build step, nothing
//! fetched from elsewhere.
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
/// Its LLM views: a run's model usage and each attempt's prompts (`GET /llm.js`).
pub const LLM_JS: &str = include_str!("../../../assets/dashboard/llm.js");
/// Its actions: start a run from a form, cancel, retry, filter (`GET /actions.js`).
pub const ACTIONS_JS: &str = include_str!("../../../assets/dashboard/actions.js");
/// Its metrics view (`GET /metrics.js`).
pub const METRICS_JS: &str = include_str!("../../../assets/dashboard/metrics.js");
/// Its stylesheet (`GET /style.css`).
pub const STYLE_CSS: &str = include_str!("../../../assets/dashboard/style.css");

const JS: &str = "text/javascript; charset=utf-8";

/// Every script of the page, by its path.
const SCRIPTS: [(&str, &str); 6] = [
    ("/app.js", APP_JS),
    ("/graph.js", GRAPH_JS),
    ("/run.js", RUN_JS),
    ("/llm.js", LLM_JS),
    ("/actions.js", ACTIONS_JS),
    ("/metrics.js", METRICS_JS),
];

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
    let mut r = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/index.html",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        );
    for (path, body) in SCRIPTS {
        r = r.route(path, get(move || async move { asset(JS, body) }));
    }
    r
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
        let pages = [("/index.html", INDEX_HTML), ("/style.css", STYLE_CSS)];
        for (name, text) in pages.into_iter().chain(SCRIPTS) {
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
    fn every_script_the_page_names_is_served() {
        let named: Vec<&str> = INDEX_HTML
            .split("<script src=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        assert!(!named.is_empty());
        for src in named {
            assert!(
                SCRIPTS.iter().any(|(path, _)| path[1..] == *src),
                "index.html loads {src}, which is not served"
            );
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
            for (name, text) in SCRIPTS {
                assert!(!text.contains(needle), "{name} uses {needle}");
            }
        }
    }
}
