//! `conformance_suite!` must run every public function of `conformance`: adding a
//! behaviour without listing it would silently leave it out of every backend's tests.

#[test]
fn conformance_suite_lists_every_conformance_function() {
    let module = include_str!("../src/conformance.rs");
    let lib = include_str!("../src/lib.rs");
    let functions: Vec<&str> = module
        .lines()
        .filter_map(|l| l.strip_prefix("pub async fn "))
        .map(|l| l.split('(').next().unwrap_or_default())
        .collect();
    assert!(
        functions.len() > 50,
        "found only {} conformance functions",
        functions.len()
    );
    let listed: Vec<&str> = lib
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("ref ").or_else(|| l.strip_prefix("arc ")))
        .map(|l| l.trim_end_matches(','))
        .collect();
    let missing: Vec<&&str> = functions.iter().filter(|f| !listed.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "conformance_suite! does not list {missing:?}"
    );
    let mut unique = listed.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        listed.len(),
        "conformance_suite! lists a function twice"
    );
}
