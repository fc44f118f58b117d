//! Loading profile files: user errors name the field and the line.

use lpuc_targets::groq::{MachineModel, ProfileError};

const V1: &str = include_str!("../profiles/v1.toml");

/// 1-based line of the first line in `V1` that starts (after indentation) with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(prefix))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}"))
}

fn load_err(text: &str) -> ProfileError {
    match MachineModel::from_toml_str(text, "test.toml") {
        Ok(_) => panic!("profile unexpectedly loaded"),
        Err(e) => e,
    }
}

#[test]
fn missing_field_names_field_and_table() {
    let text: String = V1
        .lines()
        .filter(|l| !l.starts_with("clock_hz"))
        .map(|l| format!("{l}\n"))
        .collect();
    let e = load_err(&text);
    let msg = e.to_string();
    println!("{msg}");
    assert!(matches!(e, ProfileError::Syntax { .. }), "{e:?}");
    assert_eq!(e.fields(), vec!["chip.clock_hz"], "{msg}");
    assert!(msg.contains("clock_hz"), "{msg}");
    assert_eq!(e.line(), Some(line_of(&text, "[chip]")), "{msg}");
    assert!(msg.starts_with("test.toml:"), "{msg}");
}

#[test]
fn mistyped_value_names_field_and_line() {
    let text = V1.replace(
        "superlanes = { value = 20,",
        "superlanes = { value = \"twenty\",",
    );
    let e = load_err(&text);
    let msg = e.to_string();
    println!("{msg}");
    assert_eq!(e.fields(), vec!["chip.superlanes.value"], "{msg}");
    assert_eq!(e.line(), Some(line_of(&text, "superlanes =")), "{msg}");
}

#[test]
fn negative_count_is_a_type_error_at_its_line() {
    let text = V1.replace(
        "hop_latency_cycles = { value = 216,",
        "hop_latency_cycles = { value = -216,",
    );
    let e = load_err(&text);
    let msg = e.to_string();
    println!("{msg}");
    assert_eq!(e.fields(), vec!["c2c.hop_latency_cycles.value"], "{msg}");
    assert_eq!(
        e.line(),
        Some(line_of(&text, "hop_latency_cycles =")),
        "{msg}"
    );
}

#[test]
fn unknown_field_is_rejected_by_name() {
    let text = V1.replace("clock_hz = {", "clock_mhz = {");
    let e = load_err(&text);
    let msg = e.to_string();
    println!("{msg}");
    assert_eq!(e.fields(), vec!["chip.clock_mhz"], "{msg}");
    assert!(msg.contains("unknown field"), "{msg}");
    assert_eq!(e.line(), Some(line_of(&text, "clock_mhz")), "{msg}");
}

#[test]
fn missing_source_names_the_parameter() {
    let text = V1.replace(
        "vector_bytes = { value = 320, source = \"[R] a vector is 320 bytes (one byte per lane)\" }",
        "vector_bytes = { value = 320 }",
    );
    assert_ne!(text, V1);
    let e = load_err(&text);
    let msg = e.to_string();
    println!("{msg}");
    assert!(msg.contains("source"), "{msg}");
    assert_eq!(e.fields(), vec!["chip.vector_bytes.source"], "{msg}");
    assert_eq!(e.line(), Some(line_of(&text, "vector_bytes =")), "{msg}");
}

#[test]
fn untagged_source_is_invalid_at_its_line() {
    let text = V1.replace(
        "source = \"[R] 2 mirrored hemispheres\"",
        "source = \"trust me\"",
    );
    let e = load_err(&text);
    let msg = e.to_string();
    println!("{msg}");
    assert!(matches!(e, ProfileError::Invalid { .. }), "{e:?}");
    assert_eq!(e.fields(), vec!["chip.hemispheres.source"], "{msg}");
    assert_eq!(e.line(), Some(line_of(&text, "hemispheres =")), "{msg}");
}

#[test]
fn free_tag_outside_free_table_is_invalid() {
    let text = V1.replace(
        "source = \"[R] 2 mirrored hemispheres\"",
        "source = \"free: I picked it\"",
    );
    let e = load_err(&text);
    assert_eq!(e.fields(), vec!["chip.hemispheres.source"], "{e}");
}

#[test]
fn out_of_range_value_is_invalid_at_its_line() {
    let text = V1.replace("superlanes = { value = 20,", "superlanes = { value = 0,");
    let e = load_err(&text);
    let msg = e.to_string();
    println!("{msg}");
    assert!(e.fields().contains(&"chip.superlanes"), "{msg}");
    let issue_line = match &e {
        ProfileError::Invalid { issues, .. } => issues
            .iter()
            .find(|i| i.field == "chip.superlanes")
            .and_then(|i| i.line),
        _ => None,
    };
    assert_eq!(issue_line, Some(line_of(&text, "superlanes =")), "{msg}");
}

#[test]
fn inconsistent_fields_are_reported() {
    // 3 MXM per hemisphere × 16 install rows = 48 > 32 streams of one direction.
    let text = V1.replace(
        "{ kind = \"mxm\", count = 2 }",
        "{ kind = \"mxm\", count = 3 }",
    );
    let e = load_err(&text);
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        e.fields()
            .contains(&"free.install_rows_per_cycle_per_plane"),
        "{msg}"
    );
    // The usable fraction must be a fraction.
    let text = V1.replace(
        "usable_sram_fraction = { value = 0.8,",
        "usable_sram_fraction = { value = 1.5,",
    );
    let e = load_err(&text);
    assert_eq!(e.fields(), vec!["free.usable_sram_fraction"], "{e}");
}

#[test]
fn not_toml_reports_a_line() {
    let e = load_err("[chip\nclock_hz = 1\n");
    println!("{e}");
    assert!(matches!(e, ProfileError::Syntax { .. }));
    assert_eq!(e.line(), Some(1), "{e}");
}

#[test]
fn load_from_a_user_path() {
    let dir = std::env::temp_dir().join(format!("lpuc-groq-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = dir.join("mine.toml");
    std::fs::write(
        &ok,
        V1.replace("value = 900_000_000", "value = 1_000_000_000"),
    )
    .unwrap();
    let m = MachineModel::load(&ok).unwrap();
    assert_eq!(m.chip.clock_hz.get(), 1_000_000_000);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, V1.replace("value = 900_000_000", "value = \"fast\"")).unwrap();
    let e = MachineModel::load(&bad).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!("{}:", bad.display())),
        "{e}"
    );

    let e = MachineModel::load(dir.join("missing.toml")).unwrap_err();
    assert!(matches!(e, ProfileError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.toml"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_builtin_lists_the_known_ones() {
    let e = MachineModel::builtin("v9").unwrap_err();
    assert!(
        e.to_string().contains("v1") && e.to_string().contains("v2-whatif"),
        "{e}"
    );
}

#[test]
fn source_tag_grammar() {
    use lpuc_targets::groq::profile::check_source;
    for ok in [
        "[P] ISCA'20 abstract",
        "[S/U] survey",
        "[D/U] estimate",
        "[R], [S] Linley 2020",
        "assumption: v1 value",
    ] {
        assert!(check_source(ok, false).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "[X] nope",
        "[R]",
        "[] x",
        "assumption:",
        "ISCA'20 says so",
        "free: mine",
    ] {
        assert!(check_source(bad, false).is_err(), "{bad:?}");
    }
    assert!(check_source("free: fitted to X", true).is_ok());
    assert!(
        check_source("[R] published", true).is_err(),
        "free params say how they were set"
    );
}
