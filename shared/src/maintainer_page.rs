//! The maintainer page, `GET /admin?deck=…`: HTML, JavaScript modules and CSS from
//! `maintainer-page/static/`, compiled into the binary (no build step, nothing from a CDN), served
//! with a strict Content-Security-Policy. The page itself holds no data: it calls the maintainer
//! API with the token it is given (URL fragment or `postMessage`), so it needs no auth to fetch.

use sha2::{Digest, Sha256};

/// A file of the page other than the HTML, served at `/admin/<name>`.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

pub const ASSETS: &[Asset] = &[
    Asset { name: "app.js", content_type: JS, body: include_str!("../../maintainer-page/static/app.js") },
    Asset { name: "api.js", content_type: JS, body: include_str!("../../maintainer-page/static/api.js") },
    Asset { name: "model.js", content_type: JS, body: include_str!("../../maintainer-page/static/model.js") },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../maintainer-page/static/style.css"),
    },
];

const INDEX: &str = include_str!("../../maintainer-page/static/index.html");
const EMBED_PLACEHOLDER: &str = "{{EMBED_ORIGINS}}";

/// The origins that may embed the page (CSP `frame-ancestors`) and send it a token by
/// `postMessage`: AnkiCollab's website. Empty: the page cannot be framed at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbedOrigins(Vec<String>);

impl EmbedOrigins {
    /// Origins separated by spaces or commas, each `https://host[:port]` (or `http://`, for a
    /// local test page). `""` and `'none'` mean none.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for o in s.split([' ', ',', '\t', '\n']).filter(|o| !o.is_empty() && *o != "'none'") {
            let o = o.trim_end_matches('/');
            let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
            let (host, port) = match rest {
                Some(r) => r.split_once(':').map_or((r, None), |(h, p)| (h, Some(p))),
                None => return Err(format!("{o:?} is not an origin (https://host[:port])")),
            };
            let host_ok = !host.is_empty()
                && host.len() <= 253
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
            if !host_ok || !port_ok {
                return Err(format!("{o:?} is not an origin (https://host[:port])"));
            }
            let o = o.to_ascii_lowercase();
            if !out.contains(&o) {
                out.push(o);
            }
        }
        Ok(Self(out))
    }

    pub fn origins(&self) -> &[String] {
        &self.0
    }

    fn frame_ancestors(&self) -> String {
        if self.0.is_empty() {
            "'none'".into()
        } else {
            self.0.join(" ")
        }
    }
}

/// What to answer: the body and the headers that go with it.
#[derive(Debug)]
pub struct Served {
    pub content_type: &'static str,
    pub body: String,
    /// A strong validator of the body, quoted.
    pub etag: String,
    /// Headers beside content type, cache and validator.
    pub headers: Vec<(&'static str, String)>,
}

fn etag(body: &str) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(body.as_bytes()))[..32])
}

/// The page's Content-Security-Policy. No inline script or style anywhere, scripts and styles
/// from the page's own origin only, network calls to the API (same origin) only, images and
/// audio from the bucket's pre-signed URLs only, no HTML sinks (Trusted Types with no policy).
pub fn content_security_policy(embed: &EmbedOrigins, media_origin: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src {media_origin}; \
         media-src {media_origin}; base-uri 'none'; form-action 'none'; frame-ancestors {}; \
         require-trusted-types-for 'script'; trusted-types 'none'",
        embed.frame_ancestors()
    )
}

fn escape_attribute(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('\'', "&#39;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The HTML of the page. `media_origin` is where pre-signed URLs point (the bucket's origin).
pub fn page(embed: &EmbedOrigins, media_origin: &str) -> Served {
    let body = INDEX.replace(EMBED_PLACEHOLDER, &escape_attribute(&embed.origins().join(" ")));
    let mut headers = vec![
        ("content-security-policy", content_security_policy(embed, media_origin)),
        ("referrer-policy", "no-referrer".into()),
        ("cross-origin-resource-policy", "same-origin".into()),
        ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()".into()),
    ];
    if embed.origins().is_empty() {
        // For browsers older than CSP's frame-ancestors.
        headers.push(("x-frame-options", "DENY".into()));
    }
    Served { content_type: "text/html; charset=utf-8", etag: etag(&body), body, headers }
}

/// One of the page's scripts or its style sheet.
pub fn asset(name: &str) -> Option<Served> {
    let a = ASSETS.iter().find(|a| a.name == name)?;
    Some(Served {
        content_type: a.content_type,
        body: a.body.to_string(),
        etag: etag(a.body),
        headers: vec![
            ("referrer-policy", "no-referrer".into()),
            ("cross-origin-resource-policy", "same-origin".into()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_origins_are_origins_and_nothing_else() {
        assert_eq!(EmbedOrigins::parse("").unwrap(), EmbedOrigins::default());
        assert_eq!(EmbedOrigins::parse("'none'").unwrap(), EmbedOrigins::default());
        let o =
            EmbedOrigins::parse("https://ankicollab.com, https://www.AnkiCollab.com/ http://127.0.0.1:9000").unwrap();
        assert_eq!(o.origins(), ["https://ankicollab.com", "https://www.ankicollab.com", "http://127.0.0.1:9000"]);
        for bad in [
            "ankicollab.com",
            "https://a.com/path",
            "https://a.com;script-src *",
            "javascript:alert(1)",
            "https://",
            "https://a.com:",
            "https://a.com:80a",
            "*",
            "https://*.a.com",
            "https://a.com\"><script>",
        ] {
            assert!(EmbedOrigins::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_page_has_a_strict_policy_and_no_inline_code() {
        let page = page(&EmbedOrigins::default(), "https://b.s3.us-east-1.amazonaws.com");
        let csp = &page.headers.iter().find(|(k, _)| *k == "content-security-policy").unwrap().1;
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "img-src https://b.s3.us-east-1.amazonaws.com;",
            "require-trusted-types-for 'script'",
        ] {
            assert!(csp.contains(part), "{csp} lacks {part}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(page.headers.iter().any(|(k, v)| *k == "x-frame-options" && v == "DENY"));
        // Inline script or style would be refused by the policy: there must be none.
        let html = &page.body;
        assert!(!html.contains(EMBED_PLACEHOLDER));
        assert!(!html.contains("<style"), "inline style");
        assert!(!html.contains(" style="), "inline style attribute");
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
        for (i, _) in html.match_indices(" on") {
            let name: String = html[i + 1..].chars().take_while(|c| c.is_ascii_lowercase()).collect();
            assert!(!html[i + 1 + name.len()..].starts_with('='), "inline event handler {name}");
        }
        let embedded = super::page(&EmbedOrigins::parse("https://ankicollab.com").unwrap(), "http://127.0.0.1:4566");
        let csp = &embedded.headers[0].1;
        assert!(csp.contains("frame-ancestors https://ankicollab.com;"), "{csp}");
        assert!(embedded.body.contains(r#"content="https://ankicollab.com""#));
        assert!(!embedded.headers.iter().any(|(k, _)| *k == "x-frame-options"));
    }

    #[test]
    fn scripts_never_write_html() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!a.body.contains(sink), "{} uses {sink}", a.name);
            }
        }
        // Every module the page imports is served.
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit("\"./").next().unwrap().trim_end_matches("\";");
                assert!(asset(from).is_some(), "{} imports {from}, which is not served", a.name);
            }
        }
        assert!(asset("../Cargo.toml").is_none() && asset("index.html").is_none());
    }
}
