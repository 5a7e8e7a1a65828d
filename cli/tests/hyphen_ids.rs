//! Ids may begin with `-` (SPEC §1 allows `[A-Za-z0-9._:@-]`): every id flag of every
//! subcommand takes them, as `--flag -0` and as `--flag=-0`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::{Command, Output};

/// The world of `tests/vectors/errors.json`: user `-0` (Staff in `east`), device `-1` it owns.
fn world() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/errors.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let path = std::env::temp_dir().join(format!("fleetgate-cli-hyphen-{}.json", std::process::id()));
    std::fs::write(&path, file["snapshot"].to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetgate")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `sub FILE rest…` with each `--flag VALUE` pair written both ways; both must agree.
fn both_ways(sub: &str, file: &str, pairs: &[(&str, &str)]) -> String {
    let mut spaced = vec![sub.to_owned(), file.to_owned()];
    let mut joined = spaced.clone();
    for (flag, value) in pairs {
        spaced.push(flag.to_string());
        spaced.push(value.to_string());
        joined.push(format!("{flag}={value}"));
    }
    let a = ok(&spaced.iter().map(String::as_str).collect::<Vec<_>>());
    let b = ok(&joined.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(a, b, "{sub}: `--flag -x` and `--flag=-x` differ");
    a
}

#[test]
fn every_id_flag_takes_ids_that_begin_with_a_dash() {
    let w = world();
    assert_eq!(both_ways("visible", &w, &[("--user", "-0")]), "-1\nt1\n");
    assert_eq!(
        both_ways("visible", &w, &[("--user", "-0"), ("--active-org", "east"), ("--action", "control")]),
        "-1\nt1\n"
    );
    let explain = both_ways("explain", &w, &[("--user", "-0"), ("--device", "-1")]);
    assert!(explain.contains("\"ALLOW_ORG\""), "{explain}");
    assert_eq!(both_ways("orgs", &w, &[("--user", "-0")]), "east\n");
    let cmd = r#"{"op":"removeDevice","device":"-1"}"#;
    let decide = both_ways("decide", &w, &[("--actor", "-0"), ("--command", cmd)]);
    assert!(decide.contains("\"DENY_NO_PERMISSION\""), "{decide}");
    let preview = both_ways("preview", &w, &[("--actor", "-0"), ("--command", cmd)]);
    assert!(preview.contains("\"DENY_NO_PERMISSION\""), "{preview}");
    let project: serde_json::Value = serde_json::from_str(&both_ways("project", &w, &[("--viewer", "-0")])).unwrap();
    assert_eq!(project["viewer"], "-0");
    assert_eq!(project["devices"][0]["id"], "-1");
    // An id flag still needs its value.
    assert_eq!(run(&["visible", &w, "--user"]).status.code(), Some(2));
    let _ = std::fs::remove_file(&w);
}
