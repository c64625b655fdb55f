//! The web dashboard: a hand-written page, style sheet and script compiled into the binary, served on the remote
//! API port at `/` and `/ui/...` (see `docs/dashboard.md`).
//!
//! The files hold no data and need no token; everything the page shows it reads through the API with the token
//! the operator typed in, under the same checks as any other client. Every file goes out with a
//! `Content-Security-Policy` that allows only this origin's scripts and styles (no inline ones) and no framing,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

use crate::server::{self, HttpResponse};

/// The policy of every dashboard file: this origin only, nothing inline, no plugins, never in a frame.
pub(crate) const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's files: (path, content type, body).
const FILES: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("../ui/index.html")),
    ("/ui/app.css", "text/css; charset=utf-8", include_str!("../ui/app.css")),
    ("/ui/app.js", "text/javascript; charset=utf-8", include_str!("../ui/app.js")),
    ("/ui/icon.svg", "image/svg+xml", include_str!("../ui/icon.svg")),
];

/// Whether `path` belongs to the dashboard (`/` or below `/ui/`), whatever the method.
pub(crate) fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.starts_with("/ui/")
}

/// Answers a request for a dashboard path: the file for `GET` and `HEAD`, 404 for an unknown file, 405 for other
/// methods. Call only when [`is_ui_path`] holds.
pub(crate) fn serve(method: &Method, path: &str) -> HttpResponse {
    if method != Method::GET && method != Method::HEAD {
        return with_headers(server::method_not_allowed("GET, HEAD"));
    }
    let path = if path == "/index.html" { "/" } else { path };
    let Some((_, content_type, body)) = FILES.iter().find(|(name, ..)| *name == path) else {
        return with_headers(server::json_error(StatusCode::NOT_FOUND, "Not found"));
    };
    let mut res = Response::new(crate::body::Body::full(hyper::body::Bytes::from_static(body.as_bytes())));
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: always revalidate (they are small), never keep a stale script.
    res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_headers(res)
}

fn with_headers(mut res: HttpResponse) -> HttpResponse {
    let headers = res.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    res
}

/// Total size of the dashboard's files in bytes.
#[cfg(test)]
pub(crate) fn total_bytes() -> usize {
    FILES.iter().map(|(_, _, body)| body.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_served_with_the_security_headers() {
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/index.html", "text/html; charset=utf-8"),
            ("/ui/app.js", "text/javascript; charset=utf-8"),
            ("/ui/app.css", "text/css; charset=utf-8"),
        ] {
            let res = serve(&Method::GET, path);
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            let headers = res.headers();
            assert_eq!(headers[CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
            assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self';"));
            assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
            assert_eq!(headers["x-content-type-options"], "nosniff");
            assert_eq!(headers["referrer-policy"], "no-referrer");
        }
        assert_eq!(serve(&Method::GET, "/ui/nothing.js").status(), StatusCode::NOT_FOUND);
        assert_eq!(serve(&Method::POST, "/").status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(is_ui_path("/") && is_ui_path("/ui/app.js") && !is_ui_path("/processes") && !is_ui_path("/uix"));
    }

    #[test]
    fn the_files_stay_small_and_hold_nothing_inline() {
        assert!(total_bytes() < 150 * 1024, "dashboard is {} bytes", total_bytes());
        let html = FILES[0].2;
        // No inline script or style: the policy would block them, so none may be relied on.
        assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains(" style="));
        assert!(!html.contains("onclick=") && !html.contains("onload="));
        // Nothing is fetched from elsewhere (the SVG namespace is a name, not a fetch).
        for (path, _, body) in FILES {
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(!body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"), "{path}");
        }
        // Data goes into the page as text only.
        let js = FILES[2].2;
        assert!(!js.contains("innerHTML") && !js.contains("outerHTML") && !js.contains("insertAdjacentHTML"));
        assert!(!js.contains("eval(") && !js.contains("new Function"));
        assert!(!js.contains("localStorage"), "the token lives in sessionStorage only");
    }
}
