//! SVG, safely: parsed by `roxmltree` (the parser `resvg` uses) and written again from an
//! allow-list of elements and attributes, so what is stored keeps its rendering and nothing
//! active survives.
//!
//! Gone: scripts, event-handler attributes, `<foreignObject>`, links (an `<a>` becomes a `<g>`),
//! `javascript:` and `data:` URLs (except raster images in `<image>`), every reference outside
//! the document (`href`, `url(…)`), CSS that could load anything (`@import`, a `url()` that is not
//! `#fragment`, escapes), animations of anything but presentation attributes, the DTD, comments
//! and processing instructions (`xml-stylesheet`), and elements or attributes of other
//! namespaces (editor data such as Inkscape's or KanjiVG's `kvg:`). A DTD that declares entities
//! is refused, so there is nothing to expand (no XXE, no billion laughs). Work is bounded: at most
//! [`MAX_NODES`] nodes and [`MAX_DEPTH`] levels, else `too_complex`.
//!
//! The thumbnail is rendered from what is stored, by `resvg` (without fonts: text is left out of
//! thumbnails).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use resvg::{tiny_skia, usvg};
use roxmltree::{Document, Node, NodeType, ParsingOptions};

use crate::model::RejectReason;

const SVG_NS: &str = "http://www.w3.org/2000/svg";
const XLINK_NS: &str = "http://www.w3.org/1999/xlink";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Nodes (elements, attributes' text, text nodes) a document may have.
pub const MAX_NODES: u32 = 200_000;
/// Nesting depth a document may have.
pub const MAX_DEPTH: usize = 64;

/// Elements kept (their allowed attributes, children and text).
const ELEMENTS: &[&str] = &[
    "svg",
    "g",
    "defs",
    "symbol",
    "use",
    "title",
    "desc",
    "switch",
    "path",
    "rect",
    "circle",
    "ellipse",
    "line",
    "polyline",
    "polygon",
    "text",
    "tspan",
    "textPath",
    "linearGradient",
    "radialGradient",
    "stop",
    "pattern",
    "clipPath",
    "mask",
    "marker",
    "image",
    "style",
    "filter",
    "feBlend",
    "feColorMatrix",
    "feComponentTransfer",
    "feFuncR",
    "feFuncG",
    "feFuncB",
    "feFuncA",
    "feComposite",
    "feConvolveMatrix",
    "feDiffuseLighting",
    "feDisplacementMap",
    "feDistantLight",
    "feDropShadow",
    "feFlood",
    "feGaussianBlur",
    "feImage",
    "feMerge",
    "feMergeNode",
    "feMorphology",
    "feOffset",
    "fePointLight",
    "feSpecularLighting",
    "feSpotLight",
    "feTile",
    "feTurbulence",
    "animate",
    "animateTransform",
    "animateMotion",
    "set",
    "mpath",
];

/// Elements whose `href` may point (inside the document only, or at a raster `data:` image for
/// `image` and `feImage`).
const HREF_ELEMENTS: &[&str] =
    &["use", "textPath", "image", "feImage", "linearGradient", "radialGradient", "pattern", "filter", "mpath"];

/// Attributes kept (without a namespace), besides `href`, `xlink:href`, `xml:space` and `xml:lang`.
const ATTRIBUTES: &[&str] = &[
    // core and structure
    "id",
    "class",
    "style",
    "lang",
    "tabindex",
    "version",
    "baseProfile",
    "x",
    "y",
    "width",
    "height",
    "viewBox",
    "preserveAspectRatio",
    "transform",
    "requiredFeatures",
    "requiredExtensions",
    "systemLanguage",
    // shapes
    "d",
    "pathLength",
    "points",
    "cx",
    "cy",
    "r",
    "rx",
    "ry",
    "x1",
    "y1",
    "x2",
    "y2",
    // presentation
    "fill",
    "fill-opacity",
    "fill-rule",
    "stroke",
    "stroke-width",
    "stroke-linecap",
    "stroke-linejoin",
    "stroke-miterlimit",
    "stroke-dasharray",
    "stroke-dashoffset",
    "stroke-opacity",
    "opacity",
    "color",
    "color-interpolation",
    "color-interpolation-filters",
    "color-rendering",
    "display",
    "visibility",
    "overflow",
    "clip",
    "clip-path",
    "clip-rule",
    "mask",
    "filter",
    "marker",
    "marker-start",
    "marker-mid",
    "marker-end",
    "paint-order",
    "vector-effect",
    "shape-rendering",
    "image-rendering",
    "text-rendering",
    "mix-blend-mode",
    "isolation",
    "stop-color",
    "stop-opacity",
    "flood-color",
    "flood-opacity",
    "lighting-color",
    "font",
    "font-family",
    "font-size",
    "font-size-adjust",
    "font-stretch",
    "font-style",
    "font-variant",
    "font-weight",
    "letter-spacing",
    "word-spacing",
    "text-anchor",
    "text-decoration",
    "dominant-baseline",
    "alignment-baseline",
    "baseline-shift",
    "writing-mode",
    "direction",
    "unicode-bidi",
    "dx",
    "dy",
    "rotate",
    "textLength",
    "lengthAdjust",
    "startOffset",
    "method",
    "spacing",
    "side",
    // gradients, patterns, clips, masks, markers
    "gradientUnits",
    "gradientTransform",
    "spreadMethod",
    "fx",
    "fy",
    "fr",
    "offset",
    "patternUnits",
    "patternContentUnits",
    "patternTransform",
    "clipPathUnits",
    "maskUnits",
    "maskContentUnits",
    "markerUnits",
    "markerWidth",
    "markerHeight",
    "refX",
    "refY",
    "orient",
    // filters
    "filterUnits",
    "primitiveUnits",
    "result",
    "in",
    "in2",
    "mode",
    "type",
    "values",
    "tableValues",
    "slope",
    "intercept",
    "amplitude",
    "exponent",
    "operator",
    "k1",
    "k2",
    "k3",
    "k4",
    "order",
    "kernelMatrix",
    "divisor",
    "bias",
    "targetX",
    "targetY",
    "edgeMode",
    "kernelUnitLength",
    "preserveAlpha",
    "surfaceScale",
    "diffuseConstant",
    "specularConstant",
    "specularExponent",
    "azimuth",
    "elevation",
    "z",
    "pointsAtX",
    "pointsAtY",
    "pointsAtZ",
    "limitingConeAngle",
    "scale",
    "xChannelSelector",
    "yChannelSelector",
    "stdDeviation",
    "radius",
    "baseFrequency",
    "numOctaves",
    "seed",
    "stitchTiles",
    // animation (of presentation attributes only: see `animated_attribute`)
    "attributeName",
    "attributeType",
    "begin",
    "dur",
    "end",
    "min",
    "max",
    "restart",
    "repeatCount",
    "repeatDur",
    "fill",
    "calcMode",
    "keyTimes",
    "keySplines",
    "from",
    "to",
    "by",
    "additive",
    "accumulate",
    "path",
    "keyPoints",
];

/// The sanitised document, or why it is refused.
pub fn sanitize(input: &[u8]) -> Result<Vec<u8>, RejectReason> {
    let text = std::str::from_utf8(input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input))
        .map_err(|_| RejectReason::CorruptMedia)?;
    // Nothing to expand, nothing external to fetch: a DTD may declare attributes (KanjiVG's does),
    // never entities.
    if text.contains("<!ENTITY") {
        tracing::info!("svg declares entities");
        return Err(RejectReason::CorruptMedia);
    }
    // No entity resolver: an external entity is never fetched.
    let options = ParsingOptions { allow_dtd: true, nodes_limit: MAX_NODES, ..ParsingOptions::default() };
    let doc = Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => RejectReason::TooComplex,
        e => {
            tracing::info!(error = %e, "svg is not well-formed");
            RejectReason::CorruptMedia
        }
    })?;
    let root = doc.root_element();
    // An SVG root, with the SVG namespace or none (which browsers would not render: it is added).
    let bare = root.tag_name().namespace().is_none();
    if root.tag_name().name() != "svg" || !(bare || root.tag_name().namespace() == Some(SVG_NS)) {
        return Err(RejectReason::UnsupportedType);
    }
    let ids: BTreeSet<&str> = doc.descendants().filter_map(|n| n.attribute("id")).collect();
    let mut out = String::with_capacity(text.len());
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let w = Writer { bare, ids };
    w.element(root, 0, &mut out)?;
    out.push('\n');
    Ok(out.into_bytes())
}

struct Writer<'a> {
    /// The document has no namespace (elements without one are SVG's).
    bare: bool,
    /// Every `id` in the document: what an internal reference may name.
    ids: BTreeSet<&'a str>,
}

impl Writer<'_> {
    fn is_svg(&self, n: Node) -> bool {
        match n.tag_name().namespace() {
            Some(ns) => ns == SVG_NS,
            None => self.bare,
        }
    }

    fn element(&self, n: Node, depth: usize, out: &mut String) -> Result<(), RejectReason> {
        if depth > MAX_DEPTH {
            return Err(RejectReason::TooComplex);
        }
        let name = n.tag_name().name();
        if !self.is_svg(n) || (!ELEMENTS.contains(&name) && name != "a") {
            return Ok(()); // dropped with everything inside it
        }
        if name == "style" && !n.children().all(|c| c.is_text() && css_is_inert(c.text().unwrap_or(""))) {
            return Ok(());
        }
        if matches!(name, "animate" | "set") && !animated_attribute(n) {
            return Ok(());
        }
        if name == "animateTransform"
            && n.attribute("attributeName")
                .is_some_and(|a| a != "transform" && a != "gradientTransform" && a != "patternTransform")
        {
            return Ok(());
        }
        // A link keeps its content, not its destination.
        let tag = if name == "a" { "g" } else { name };
        out.push('<');
        out.push_str(tag);
        if depth == 0 {
            out.push_str(" xmlns=\"http://www.w3.org/2000/svg\" xmlns:xlink=\"http://www.w3.org/1999/xlink\"");
        }
        for a in n.attributes() {
            if let Some(attr) = self.attribute(tag, &a) {
                let _ = write!(out, " {attr}=\"");
                escape(a.value(), true, out);
                out.push('"');
            }
        }
        let children: Vec<Node> =
            n.children().filter(|c| matches!(c.node_type(), NodeType::Element | NodeType::Text)).collect();
        if children.is_empty() {
            out.push_str("/>");
            return Ok(());
        }
        out.push('>');
        for c in children {
            match c.node_type() {
                NodeType::Element => self.element(c, depth + 1, out)?,
                NodeType::Text => escape(c.text().unwrap_or(""), false, out),
                _ => {}
            }
        }
        let _ = write!(out, "</{tag}>");
        Ok(())
    }

    /// The attribute's name as written, if it is kept.
    fn attribute(&self, element: &str, a: &roxmltree::Attribute) -> Option<&'static str> {
        let value = a.value();
        let name = match a.namespace() {
            None => ATTRIBUTES
                .iter()
                .copied()
                .find(|&x| x == a.name())
                .or_else(|| (a.name() == "href").then_some("href"))?,
            Some(XLINK_NS) if a.name() == "href" => "xlink:href",
            Some(XML_NS) if a.name() == "space" => "xml:space",
            Some(XML_NS) if a.name() == "lang" => "xml:lang",
            Some(_) => return None,
        };
        if name.ends_with("href") {
            if !HREF_ELEMENTS.contains(&element) {
                return None;
            }
            let internal = value.strip_prefix('#').is_some_and(|id| self.ids.contains(id));
            let raster = matches!(element, "image" | "feImage") && is_raster_data_url(value);
            return (internal || raster).then_some(name);
        }
        if name == "style" {
            return css_is_inert(value).then_some(name);
        }
        // Paint and clip references: `url(#id)` only.
        if value.contains("url(") || value.contains("URL(") {
            return url_refs_are_internal(value).then_some(name);
        }
        let lower = value.to_ascii_lowercase();
        if lower.contains("javascript:") || lower.contains("data:") {
            return None;
        }
        Some(name)
    }
}

/// An animation of a presentation attribute (never of `href`, `style` or a handler).
fn animated_attribute(n: Node) -> bool {
    match n.attribute("attributeName") {
        Some(attr) => {
            attr != "href"
                && !attr.contains(':')
                && attr != "style"
                && !attr.starts_with("on")
                && ATTRIBUTES.contains(&attr)
        }
        None => false,
    }
}

/// A `data:` URL of a PNG, JPEG, GIF or WebP image.
fn is_raster_data_url(v: &str) -> bool {
    let v = v.trim_start();
    ["data:image/png", "data:image/jpeg", "data:image/jpg", "data:image/gif", "data:image/webp"]
        .iter()
        .any(|p| v.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p)))
}

/// Every `url(…)` in the value names a fragment of this document.
fn url_refs_are_internal(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("url(") {
        let inner = rest[i + 4..].trim_start().trim_start_matches(['"', '\'']);
        if !inner.starts_with('#') {
            return false;
        }
        rest = &rest[i + 4..];
    }
    true
}

/// CSS (a `<style>` element or a `style` attribute) that can load nothing and run nothing. It is
/// kept whole or dropped whole: never edited.
fn css_is_inert(css: &str) -> bool {
    let lower = css.to_ascii_lowercase();
    // Escapes could spell any of the words below in disguise.
    !lower.contains('\\')
        && !lower.contains("@import")
        && !lower.contains("@font-face")
        && !lower.contains("expression(")
        && !lower.contains("javascript:")
        && !lower.contains("behavior")
        && !lower.contains("-moz-binding")
        && !lower.contains("image-set(")
        && url_refs_are_internal(&lower)
}

fn escape(s: &str, attribute: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// What process-upload stores for an SVG: the sanitised bytes, their size in pixels and a
/// thumbnail.
pub struct ProcessedSvg {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub thumbnail: Vec<u8>,
}

/// Options that never read anything outside the document (no files, no fonts).
pub fn render_options() -> usvg::Options<'static> {
    let image_href_resolver =
        usvg::ImageHrefResolver { resolve_string: Box::new(|_, _| None), ..usvg::ImageHrefResolver::default() };
    usvg::Options { resources_dir: None, image_href_resolver, ..usvg::Options::default() }
}

/// Render `svg` to fit a square of `edge` pixels (or at its own size, `edge` 0).
pub fn render(svg: &[u8], edge: u32) -> Result<tiny_skia::Pixmap, RejectReason> {
    let tree = usvg::Tree::from_data(svg, &render_options()).map_err(|e| {
        tracing::info!(error = %e, "svg does not render");
        RejectReason::CorruptMedia
    })?;
    let size = tree.size();
    let scale = if edge == 0 { 1.0 } else { edge as f32 / size.width().max(size.height()) };
    let (w, h) = ((size.width() * scale).ceil().max(1.0) as u32, (size.height() * scale).ceil().max(1.0) as u32);
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or(RejectReason::TooManyPixels)?;
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    Ok(pixmap)
}

/// Sanitise, measure and make the thumbnail.
pub fn process(bytes: &[u8], thumbnail_edge: u32) -> Result<ProcessedSvg, RejectReason> {
    let clean = sanitize(bytes)?;
    let tree = usvg::Tree::from_data(&clean, &render_options()).map_err(|_| RejectReason::CorruptMedia)?;
    let size = tree.size();
    let (width, height) = (size.width().round().max(1.0) as u32, size.height().round().max(1.0) as u32);
    let pixmap = render(&clean, thumbnail_edge)?;
    let rgba = image::RgbaImage::from_raw(
        pixmap.width(),
        pixmap.height(),
        pixmap
            .pixels()
            .iter()
            .flat_map(|p| {
                let c = p.demultiply();
                [c.red(), c.green(), c.blue(), c.alpha()]
            })
            .collect(),
    )
    .ok_or(RejectReason::CorruptMedia)?;
    let thumbnail = crate::convert::thumbnail(&image::DynamicImage::ImageRgba8(rgba), thumbnail_edge)?;
    Ok(ProcessedSvg { bytes: clean, width, height, thumbnail })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        String::from_utf8(sanitize(s.as_bytes()).unwrap()).unwrap()
    }

    const HEAD: &str =
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">"#;

    #[test]
    fn active_content_goes() {
        let out = clean(&format!(
            r##"{HEAD}<script>alert(1)</script><rect width="5" height="5" onload="alert(1)" fill="red"/>
            <a href="javascript:alert(1)"><circle r="1"/></a><foreignObject><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject>
            <image href="https://evil.example/x.png"/><image xlink:href="data:image/svg+xml;base64,AAAA"/>
            <image href="data:image/png;base64,iVBORw0KGgo="/><use href="#r"/><use href="other.svg#x"/>
            <rect id="r" fill="url(http://evil.example/#x)" stroke="url(#g)"/>
            <style>@import url(x.css); rect {{ fill: blue }}</style><style>rect {{ fill: green }}</style>
            <g style="background:url(https://evil.example/)"/><set attributeName="href" to="javascript:alert(1)"/>
            <animate attributeName="fill" from="red" to="blue" dur="1s"/><?xml-stylesheet href="x.css"?><!-- comment -->
            </svg>"##
        ));
        for gone in [
            "script",
            "onload",
            "javascript",
            "foreignObject",
            "evil",
            "svg+xml",
            "@import",
            "other.svg",
            "<set",
            "comment",
            "stylesheet",
        ] {
            assert!(!out.contains(gone), "{gone} survived: {out}");
        }
        for kept in [
            r#"fill="red""#,
            r#"<g><circle r="1"/></g>"#,
            "data:image/png",
            r##"<use href="#r"/>"##,
            r##"stroke="url(#g)""##,
            "fill: green",
            r#"<animate attributeName="fill""#,
        ] {
            assert!(out.contains(kept), "{kept} is gone: {out}");
        }
    }

    #[test]
    fn entities_deep_nesting_and_too_many_nodes_are_refused() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><svg xmlns="http://www.w3.org/2000/svg">&b;</svg>"#;
        assert_eq!(sanitize(laughs.as_bytes()), Err(RejectReason::CorruptMedia));
        let xxe = r#"<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg xmlns="http://www.w3.org/2000/svg">&x;</svg>"#;
        assert_eq!(sanitize(xxe.as_bytes()), Err(RejectReason::CorruptMedia));
        let deep = format!("{HEAD}{}{}</svg>", "<g>".repeat(100), "</g>".repeat(100));
        assert_eq!(sanitize(deep.as_bytes()), Err(RejectReason::TooComplex));
        let many = format!("{HEAD}{}</svg>", "<rect/>".repeat(MAX_NODES as usize));
        assert_eq!(sanitize(many.as_bytes()), Err(RejectReason::TooComplex));
        assert_eq!(sanitize(b"<svg"), Err(RejectReason::CorruptMedia));
        assert_eq!(sanitize(b"<html xmlns='http://www.w3.org/1999/xhtml'/>"), Err(RejectReason::UnsupportedType));
        // A DTD that only declares attributes (KanjiVG's) is fine; it is not written out.
        let kvg = r#"<!DOCTYPE svg [<!ATTLIST g kvg:element CDATA #IMPLIED>]><svg xmlns="http://www.w3.org/2000/svg" xmlns:kvg="k"><g kvg:element="x"/></svg>"#;
        let out = clean(kvg);
        assert!(!out.contains("DOCTYPE") && !out.contains("kvg"), "{out}");
    }

    #[test]
    fn a_document_without_a_namespace_gets_one() {
        let out = clean(r#"<svg width="4" height="4"><rect width="4" height="4"/></svg>"#);
        assert!(out.contains(r#"<svg xmlns="http://www.w3.org/2000/svg""#), "{out}");
        assert!(render(out.as_bytes(), 0).is_ok());
    }

    #[test]
    fn clean_documents_render_the_same() {
        let doc = format!(
            r##"{HEAD}<defs><linearGradient id="g"><stop offset="0" stop-color="red"/><stop offset="1" stop-color="blue"/></linearGradient></defs>
            <rect width="10" height="10" fill="url(#g)"/><path d="M1 1 L9 9" stroke="black" style="stroke-width:2;stroke-linecap:round"/></svg>"##
        );
        let out = sanitize(doc.as_bytes()).unwrap();
        for edge in [0, 64] {
            assert_eq!(render(doc.as_bytes(), edge).unwrap().data(), render(&out, edge).unwrap().data());
        }
        let p = process(doc.as_bytes(), 256).unwrap();
        assert_eq!((p.width, p.height), (10, 10));
        assert!(p.thumbnail.starts_with(b"RIFF"));
    }

    /// KanjiVG's stroke-order diagrams, as installed in the tools venv (`kanjivg` on PyPI), or
    /// `KANJIVG_DIR`.
    fn kanjivg() -> std::path::PathBuf {
        if let Ok(dir) = std::env::var("KANJIVG_DIR") {
            return dir.into();
        }
        let cache = std::env::var("ANKICOLLAB_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ankicollab-media")
        });
        let lib = cache.join("venv-tools/lib");
        let found = std::fs::read_dir(&lib)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("site-packages/kanji"))
            .find(|p| p.is_dir());
        found.unwrap_or_else(|| {
            panic!("no KanjiVG under {}: scripts/bootstrap installs it, or set KANJIVG_DIR", lib.display())
        })
    }

    #[test]
    fn kanji_stroke_orders_keep_their_rendering() {
        let mut files: Vec<_> = std::fs::read_dir(kanjivg()).unwrap().flatten().map(|e| e.path()).collect();
        files.sort();
        assert!(files.len() > 10_000, "{} files", files.len());
        // Every 25th: about 470 diagrams of every kind, quickly.
        for path in files.iter().step_by(25) {
            let original = std::fs::read(path).unwrap();
            let stored = sanitize(&original).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let text = String::from_utf8(stored.clone()).unwrap();
            assert!(!text.contains("DOCTYPE") && !text.contains(" kvg:"), "{}", path.display());
            for edge in [0, 256] {
                let (a, b) = (render(&original, edge).unwrap(), render(&stored, edge).unwrap());
                assert!(a.data() == b.data(), "{} renders differently at {edge} px", path.display());
            }
        }
    }

    #[test]
    fn a_million_elements_are_refused_within_bounded_memory() {
        let doc = format!("{HEAD}{}</svg>", "<g/>".repeat(1_000_000));
        // The parser stops at MAX_NODES: nothing like a million nodes is ever held.
        assert_eq!(sanitize(doc.as_bytes()), Err(RejectReason::TooComplex));
    }
}
