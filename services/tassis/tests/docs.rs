//! Every flag of every role is documented in the README's configuration table, with its env twin.

const BIN: &str = env!("CARGO_BIN_EXE_tassis");

#[test]
fn every_flag_is_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut checked = 0;
    for role in ["standalone", "gateway", "keystore", "messaging", "attachments"] {
        let out = std::process::Command::new(BIN).args([role, "--help"]).output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for line in help.lines() {
            let Some(flag) = line.trim_start().strip_prefix("--") else {
                continue;
            };
            let flag = flag.split([' ', '<']).next().unwrap();
            if flag == "help" || flag == "version" {
                continue;
            }
            let env = format!("TASSIS_{}", flag.to_uppercase().replace('-', "_"));
            let row = format!("| `--{flag}` | `{env}` |");
            assert!(
                readme.contains(&row),
                "README lacks the row for --{flag} ({role}): {row}"
            );
            assert!(
                help.contains(&format!("env: {env}")),
                "--{flag} of {role} has no env twin {env}"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "parsed the help output ({checked} flags)");
}
