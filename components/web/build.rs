//! Embeds `assets/` into the component: writes `$OUT_DIR/assets.rs` with one `Asset` per
//! file (its bytes, media type and ETag, a hash of its content) and `STAMP`, a hash over all
//! of them. Pages load assets from `/assets/<STAMP>/<path>`, so an asset URL names one exact
//! content and can be cached for good, and relative imports between the ES modules keep
//! working.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("assets");
    println!("cargo:rerun-if-changed={}", root.display());

    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();

    let mut all = Sha256::new();
    let mut table = String::new();
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .unwrap()
            .to_str()
            .expect("asset paths are UTF-8")
            .replace('\\', "/");
        let bytes = std::fs::read(file).unwrap();
        let hash = hex(&Sha256::digest(&bytes));
        all.update(name.as_bytes());
        all.update(hash.as_bytes());
        writeln!(
            table,
            "    Asset {{ path: {name:?}, content_type: {:?}, etag: {:?}, body: include_bytes!({:?}) }},",
            content_type(&name),
            format!("\"{}\"", &hash[..20]),
            file.display().to_string(),
        )
        .unwrap();
    }
    let stamp = &hex(&all.finalize())[..12];
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("assets.rs");
    std::fs::write(
        out,
        format!(
            "pub const STAMP: &str = {stamp:?};\npub static ASSETS: &[Asset] = &[\n{table}];\n"
        ),
    )
    .unwrap();
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("webmanifest") => "application/manifest+json",
        _ => panic!("assets/{name}: add its media type to build.rs"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
