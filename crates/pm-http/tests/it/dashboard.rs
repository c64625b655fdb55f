//! The dashboard's files on the remote API port: served to any peer without a token, with the security headers;
//! the data they lead to keeps every check of the API.

use std::time::Duration;

use hyper::Method;

use crate::support::Api;

#[tokio::test]
async fn the_dashboard_is_served_with_its_headers_and_the_data_keeps_its_checks() {
    let api = Api::start();
    api.fake.untrust_loopback();
    api.fake.insert("local", false, true);
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<script src=\"/ui/app.js\" defer></script>"),
        ("/ui/app.js", "text/javascript; charset=utf-8", "sessionStorage"),
        ("/ui/app.css", "text/css; charset=utf-8", "prefers-color-scheme: dark"),
        ("/ui/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let url = format!("http://{}{path}", api.addr());
        let res = api.client.request(Method::GET, &url, None, Duration::from_secs(10)).await.unwrap();
        assert_eq!(res.status, 200, "{path}");
        let header = |name: &str| res.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(header("content-type"), content_type, "{path}");
        let csp = header("content-security-policy");
        assert!(csp.starts_with("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert!(String::from_utf8_lossy(&res.body).contains(needle), "{path}");
    }
    assert_eq!(api.get("/ui/missing.js").await.status, 404);
    assert_eq!(api.post("/", None).await.status, 405);
    // The page has no privileges of its own: an untrusted peer is still refused what the guide refuses.
    let res = api.post("/processes/local/stop", None).await;
    assert_eq!((res.status, res.error()), (403, "Cannot modify local process"));
    assert!(!api.fake.calls().iter().any(|call| call.contains("stop")));
    // Remote access off: the page is not served either.
    api.fake.edit_remote(|remote| remote.start_remote_access = false);
    assert_eq!(api.get("/").await.status, 503);
}
