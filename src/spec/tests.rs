//! Unit tests of spec reading; the expected values were checked against `rpmspec` 4.18.

use super::*;

const PREAMBLE: &str =
    "Name: foo\nVersion: 1.2\nRelease: 3%{?dist}\nSummary: A foo\nLicense: MIT\n";

fn spec(body: &str) -> Spec {
    parse(&format!("{PREAMBLE}{body}"), &[]).unwrap()
}

fn spec_with(body: &str, defines: &[&str]) -> Spec {
    let defines: Vec<Define> = defines.iter().map(|d| d.parse().unwrap()).collect();
    parse(&format!("{PREAMBLE}{body}"), &defines).unwrap()
}

fn err(body: &str) -> String {
    parse(&format!("{PREAMBLE}{body}"), &[])
        .unwrap_err()
        .to_string()
}

/// `(label, value)` of each entry.
fn list(s: &Spec) -> Vec<(String, String)> {
    s.entries
        .iter()
        .map(|e| (e.label(), e.value.clone()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn warnings(s: &Spec) -> Vec<String> {
    s.warnings.iter().map(|w| w.to_string()).collect()
}

#[test]
fn entries_with_url_and_file() {
    let s = spec(
        "URL: https://github.com/o/foo\n\
         Source0: %{url}/archive/v%{version}/%{name}-%{version}.tar.gz\n\
         Source1: https://github.com/o/foo/archive/v1.2.tar.gz#/foo-1.2.tar.gz\n\
         Source2: https://example.com/download.php?file=foo-1.2.tar.gz\n\
         Source3: foo.conf\n\
         Source4: subdir/foo.service\n\
         Patch0: 0001-fix.patch\n",
    );
    let e = &s.entries;
    assert_eq!(e.len(), 6);
    assert_eq!(e[0].tag, Tag::Source);
    assert_eq!(e[0].number, 0);
    assert_eq!(
        e[0].value,
        "https://github.com/o/foo/archive/v1.2/foo-1.2.tar.gz"
    );
    assert_eq!(e[0].url.as_deref(), Some(e[0].value.as_str()));
    assert_eq!(e[0].file, "foo-1.2.tar.gz");
    assert_eq!(e[0].line, 7);
    assert_eq!(
        e[1].url.as_deref(),
        Some("https://github.com/o/foo/archive/v1.2.tar.gz"),
        "the fragment is not part of the URL"
    );
    assert_eq!(e[1].file, "foo-1.2.tar.gz", "#/ names the file");
    assert_eq!(
        e[2].file, "foo-1.2.tar.gz",
        "rpm takes what follows the last ="
    );
    assert_eq!(
        (e[3].url.as_deref(), e[3].file.as_str()),
        (None, "foo.conf")
    );
    assert_eq!(
        (e[4].url.as_deref(), e[4].file.as_str()),
        (None, "foo.service")
    );
    assert_eq!(e[5].label(), "Patch0");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let json = serde_json::to_string(&e[3]).unwrap();
    assert_eq!(
        json,
        r#"{"tag":"Source","number":3,"value":"foo.conf","url":null,"file":"foo.conf"}"#
    );
}

#[test]
fn unnumbered_entries_are_numbered_like_rpm() {
    // rpm: one more than the highest number seen so far for that tag, from 0.
    let s = spec(
        "Source: a.tgz\nSource: b.txt\nSource5: five.txt\nSource: after5.txt\n\
         Patch: p0.patch\nPatch: p1.patch\nPatch10: p10.patch\nPatch: p11.patch\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source0", "a.tgz"),
            ("Source1", "b.txt"),
            ("Source5", "five.txt"),
            ("Source6", "after5.txt"),
            ("Patch0", "p0.patch"),
            ("Patch1", "p1.patch"),
            ("Patch10", "p10.patch"),
            ("Patch11", "p11.patch"),
        ])
    );
    let s = spec(
        "Source5: five\nSource2: two\nSource: auto\nSource4: four\nPatch3: p3\nPatch: pa\nPatch1: p1\nPatch: pb\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source5", "five"),
            ("Source2", "two"),
            ("Source6", "auto"),
            ("Source4", "four"),
            ("Patch3", "p3"),
            ("Patch4", "pa"),
            ("Patch1", "p1"),
            ("Patch5", "pb"),
        ])
    );
}

#[test]
fn tag_spelling_variants() {
    let s = spec(
        "SOURCE0: upper\nsource1: lower\nSource2 : spaced\nSource3:https://example.com/nospace.tgz\n\
         \u{20}\u{20}Source4:  indented  \nPatch0010: leading-zeros.patch\nSource 9: autonumbered\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source0", "upper"),
            ("Source1", "lower"),
            ("Source2", "spaced"),
            ("Source3", "https://example.com/nospace.tgz"),
            ("Source4", "indented"),
            ("Patch10", "leading-zeros.patch"),
            // rpm reads the number only up to a space: "Source 9:" has none.
            ("Source5", "autonumbered"),
        ])
    );
}

#[test]
fn tags_define_lower_and_upper_case_macros() {
    let s = spec(
        "Epoch: 1\nURL: https://example.com/%{name}\n\
         Source0: %{NAME}-%{VERSION}-%{epoch}-%{summary}-%{license}.tgz\n\
         Source1: %url/%name-%version-%release.tgz\n\
         %package devel\nSummary: the devel part\nSource2: %{summary}|%{SUMMARY}\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source0", "foo-1.2-1-A foo-MIT.tgz"),
            ("Source1", "https://example.com/foo/foo-1.2-3.tgz"),
            ("Source2", "the devel part|A foo"),
        ])
    );
}

#[test]
fn defines_and_dist() {
    let s = spec_with(
        "%global major 1\n%global minor %{major}.2\n%define full %{minor}.3\n\
         Source0: https://example.com/v%{full}/foo%{?dist}.tgz\n",
        &["dist .oe2403"],
    );
    assert_eq!(
        s.entries[0].value,
        "https://example.com/v1.2.3/foo.oe2403.tgz"
    );
    let s = spec("Source0: foo%{?dist}.tgz\n");
    assert_eq!(s.entries[0].value, "foo.tgz");
    assert!(s.warnings.is_empty());
    // The spec's own definition wins over --define, as with rpmspec.
    let s = spec_with(
        "%global dist .spec\nSource0: foo%{dist}\n",
        &["dist .cmdline"],
    );
    assert_eq!(s.entries[0].value, "foo.spec");
}

#[test]
fn define_parsing() {
    let d: Define = "dist .oe2403".parse().unwrap();
    assert_eq!(
        (d.name.as_str(), d.body.as_str(), d.opts),
        ("dist", ".oe2403", None)
    );
    let d: Define = "%_with_docs   1 2 ".parse().unwrap();
    assert_eq!((d.name.as_str(), d.body.as_str()), ("_with_docs", "1 2"));
    let d: Define = "src(n:) https://x/%{-n*}".parse().unwrap();
    assert_eq!(d.opts.as_deref(), Some("n:"));
    for bad in ["nospace", "name ", "1abc x", "a-b x", "f(x y"] {
        let e = bad.parse::<Define>().unwrap_err().to_string();
        assert!(e.starts_with(&format!("bad definition {bad:?}")), "{e}");
    }
}

#[test]
fn conditionals_choose_sources() {
    let body = "%if 0%{?openEuler}\nSource0: oe.tgz\n%elif 0%{?fedora} >= 39\nSource0: fedora.tgz\n\
                %else\nSource0: other.tgz\n%endif\n\
                %if %{defined fedora} && !%{defined rhel}\n%if 0%{?fedora} > 40\nSource1: rawhide.tgz\n%endif\n%endif\n";
    let value = |defs: &[&str]| {
        list(&spec_with(body, defs))
            .into_iter()
            .map(|(l, v)| format!("{l}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(value(&["openEuler 1"]), "Source0=oe.tgz");
    assert_eq!(value(&["fedora 39"]), "Source0=fedora.tgz");
    assert_eq!(
        value(&["fedora 41"]),
        "Source0=fedora.tgz,Source1=rawhide.tgz"
    );
    assert_eq!(value(&["fedora 38"]), "Source0=other.tgz");
    assert_eq!(value(&[]), "Source0=other.tgz");
}

#[test]
fn false_branches_define_nothing() {
    let s = spec(
        "%if 0\n%global x from-false\n%if 1\n%global x nested\n%endif\n%else\n%global y from-else\n%endif\n\
         Source0: %{?x}-%{?y}\n",
    );
    assert_eq!(s.entries[0].value, "-from-else");
}

#[test]
fn string_and_logic_conditions() {
    let s = spec(
        "%if \"%{name}\" == \"foo\" && (1 || 0)\nSource0: yes\n%endif\n\
         %if \"%{version}\" != \"1.2\"\nSource1: no\n%endif\n\
         %if v\"%{version}\" >= v\"1.10\"\nSource2: no\n%endif\n",
    );
    assert_eq!(list(&s), pairs(&[("Source0", "yes")]));
}

#[test]
fn arch_conditions() {
    let arch = macros::Engine::new().expand("%{_target_cpu}");
    let s = spec(&format!(
        "%ifarch {arch}\nSource0: native\n%endif\n%ifnarch {arch}\nSource1: foreign\n%endif\n\
         %ifarch sparc64 %{{ix86}}\nSource2: sparc\n%elifarch sparc64, {arch}\nSource2: elif\n%endif\n\
         %ifos linux\nSource3: linux\n%endif\n%ifnos linux\nSource4: not-linux\n%endif\n"
    ));
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source0", "native"),
            ("Source2", "elif"),
            ("Source3", "linux")
        ])
    );
    let s = spec_with(
        "%ifarch aarch64\nPatch0: arm.patch\n%endif\n",
        &["_target_cpu aarch64"],
    );
    assert_eq!(list(&s), pairs(&[("Patch0", "arm.patch")]));
}

#[test]
fn with_and_bcond() {
    let body = "%bcond_without docs\n%bcond_with tests\n\
                %if %{with docs}\nSource1: docs.tgz\n%endif\n\
                %if %{with tests}\nSource2: tests.tgz\n%endif\n\
                %{?with_tests:Source3: extra-tests.tgz}\n";
    assert_eq!(list(&spec(body)), pairs(&[("Source1", "docs.tgz")]));
    assert_eq!(
        list(&spec_with(body, &["_without_docs 1", "_with_tests 1"])),
        pairs(&[("Source2", "tests.tgz"), ("Source3", "extra-tests.tgz")])
    );
}

#[test]
fn unevaluable_conditions_are_false_and_reported() {
    let s = spec("%if %{?openEuler}\nSource0: a\n%else\nSource0: b\n%endif\n");
    assert_eq!(list(&s), pairs(&[("Source0", "b")]));
    assert_eq!(
        warnings(&s),
        vec![
            "line 6: cannot evaluate %if \"%{?openEuler}\" (expanded: \"\"): unexpected end of expression at offset 0 in \"\"; treated as false"
        ]
    );
    let s = spec("%if %{lua: for i = 1, 2 do print(i) end}\nSource0: a\n%endif\n");
    assert!(s.entries.is_empty());
    let w = warnings(&s);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with(
            "line 6: in a condition: Lua macro %{lua: for i = 1, 2 do print(i) end} is left unexpanded: 'for' statements"
        ),
        "{w:?}"
    );
    assert!(w[1].contains("treated as false"));
}

#[test]
fn conditional_structure_errors() {
    assert_eq!(err("%endif\n"), "line 6: %endif without %if");
    assert_eq!(err("%else\n"), "line 6: %else without %if");
    assert_eq!(err("%elif 1\n"), "line 6: %elif without %if");
    assert_eq!(
        err("%if 1\n%else\n%else\n%endif\n"),
        "line 8: %else after %else"
    );
    assert_eq!(
        err("%if 1\n%else\n%elif 1\n%endif\n"),
        "line 8: %elif after %else"
    );
    assert_eq!(err("%if 1\nSource0: a\n"), "line 6: %if has no %endif");
    // Inside a false branch the nesting still counts.
    assert_eq!(err("%if 0\n%if 1\n%endif\n"), "line 6: %if has no %endif");
}

#[test]
fn entry_errors() {
    assert_eq!(
        err("Source0: a\nSource0: b\n"),
        "line 7: Source 0 is defined twice"
    );
    assert_eq!(
        err("Patch: a\nPatch0: b\n"),
        "line 7: Patch 0 is defined twice"
    );
    assert_eq!(
        err("Source0x: a\n"),
        "line 6: bad Source number \"Source0x\""
    );
    assert_eq!(
        err("Source0: %{name\n"),
        "line 6: %{ is never closed (the rest of the file is inside it)"
    );
}

#[test]
fn unexpanded_and_unsupported_macros_are_warned_with_line_and_name() {
    let s = spec(
        "Source0: https://example.com/%{nosuch}/%nosuch2-%{version}.tgz\n\
         Source1: https://example.com/%(uname -r).tgz\n\
         Source2: %{lua: while true do end}\n\
         Source3: https://example.com/a%20b%2Bc.tgz\n\
         Source4: %{?maybe}\n",
    );
    assert_eq!(
        warnings(&s),
        vec![
            "line 6: Source0: macro %{nosuch} is not defined; left unexpanded",
            "line 6: Source0: macro %nosuch2 is not defined; left unexpanded",
            "line 7: Source1: shell expansion %(uname -r) is left unexpanded: \"uname\" is not a command upcache evaluates (upcache never runs a shell)",
            "line 8: Source2: Lua macro %{lua: while true do end} is left unexpanded: 'while' statements (upcache never runs Lua)",
            "line 10: Source4 is empty after expansion; rpm would refuse the spec",
        ]
    );
    assert_eq!(
        s.entries[0].value,
        "https://example.com/%{nosuch}/%nosuch2-1.2.tgz"
    );
    assert_eq!(s.entries[3].value, "https://example.com/a%20b%2Bc.tgz");
    assert_eq!(s.entries.len(), 4);
}

#[test]
fn problems_reach_the_entries_that_use_them() {
    // A %global whose body could not be expanded is reported where a Source uses it.
    let s = spec(
        "%global ver %(cat VERSION)\n%global name_of %{lua: print('x')}\n\
         %build\nmake %{?_smp_mflags} %{nosuch_in_build}\n",
    );
    assert!(
        s.warnings.is_empty(),
        "nothing in scripts is reported: {:?}",
        s.warnings
    );
    let s = spec("%global ver %(cat VERSION)\nSource0: foo-%{ver}.tgz\n");
    assert_eq!(
        warnings(&s),
        vec![
            "line 7: Source0: shell expansion %(cat VERSION) is left unexpanded: \"cat\" is not a command upcache evaluates (upcache never runs a shell)"
        ]
    );
}

#[test]
fn comments_are_expanded_like_rpm_does() {
    let s =
        spec("# %global fromcomment yes\n#Source9: %{lua: ignored}\nSource0: %{?fromcomment}\n");
    assert_eq!(list(&s), pairs(&[("Source0", "yes")]));
    assert_eq!(
        warnings(&s),
        vec![
            "line 6: a macro definition in a comment takes effect (rpm expands comments): # %global fromcomment yes"
        ]
    );
}

#[test]
fn source_and_patch_lists() {
    let s = spec(
        "Source0: main.tgz\n%description\ntext\n\
         %sourcelist\nhttps://example.com/list-%{version}.tar.gz\n\n# comment\nother.txt\n\
         %patchlist\nfix-%{name}.patch\n%prep\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source0", "main.tgz"),
            ("Source1", "https://example.com/list-1.2.tar.gz"),
            ("Source2", "other.txt"),
            ("Patch0", "fix-foo.patch"),
        ])
    );
}

#[test]
fn tags_outside_preambles_are_not_entries() {
    let s = spec("%description\nSource0: mentioned in the description\n%changelog\n- Source1: x\n");
    assert!(s.entries.is_empty());
}

#[test]
fn macros_can_produce_entries_and_span_lines() {
    let s = spec(
        "%{?nothing:Source9: bad}\n%{!?nothing:Source9: good}\n\
         %global both %{expand:\nSource10: first\nSource11: second\n}\n%{both}\n\
         %global cont one \\\n  two\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source9", "good"),
            ("Source10", "first"),
            ("Source11", "second")
        ])
    );
}

#[test]
fn undefine_and_redefine() {
    let s = spec(
        "%define v one\n%define v two\n%undefine v\nSource0: %{v}\n\
         %global v three\nSource1: %{v}\n%undefine v\n%undefine v\nSource2: %{?v}x\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[("Source0", "one"), ("Source1", "three"), ("Source2", "x")])
    );
}

#[test]
fn source_macros_are_defined() {
    let s = spec(
        "Source0: https://example.com/a.tgz#/b.tgz\nSource1: %{SOURCEURL0}.sig\nSource2: %{basename:%{S:0}}\n",
    );
    assert_eq!(s.entries[1].value, "https://example.com/a.tgz#/b.tgz.sig");
    assert_eq!(s.entries[2].value, "b.tgz");
}

#[test]
fn include_is_reported() {
    let s = spec("%include %{_sourcedir}/common.inc\nSource0: a\n");
    assert_eq!(
        warnings(&s),
        vec![
            "line 6: %include %{_sourcedir}/common.inc is not supported; entries in that file are not listed"
        ]
    );
}

#[test]
fn odd_values() {
    let s = spec("Source0: https://example.com/a/\nSource1: a b c\n");
    assert_eq!(s.entries[0].file, "");
    assert_eq!(s.entries[1].file, "a b c");
    assert_eq!(
        warnings(&s),
        vec!["line 6: Source0 \"https://example.com/a/\" has no file name"]
    );
    assert!(is_url("git+https://x/y"));
    assert!(!is_url("foo.tgz"));
    assert!(!is_url("://x"));
    assert!(!is_url("a b://x"));
}

#[test]
fn windows_line_endings() {
    let s = parse(
        "Name: foo\r\nVersion: 1\r\nSource0: %{name}-%{version}.tgz\r\n",
        &[],
    )
    .unwrap();
    assert_eq!(s.entries[0].value, "foo-1.tgz");
}

#[test]
fn conditionals_between_continued_lines_are_seen_in_false_branches() {
    // A `./configure \` option list with %if/%else/%endif between the continued lines: rpm
    // does not expand a false branch, but still finds its %else and %endif (issue 15: 17
    // specs of the rpmsphere corpus failed with "%if has no %endif").
    let s = spec(
        "%build\n./configure \\\n%if 0\n   --a \\\n%else\n   --b \\\n%endif\n   --c\n\
         %ifarch nosucharch\n   --d \\\n%endif\n\
         # a comment \\\n%if 0\n%endif\n\
         %sourcelist\nhttps://x/after-%{version}.tgz\n",
    );
    assert_eq!(list(&s), pairs(&[("Source0", "https://x/after-1.2.tgz")]));
    assert!(s.warnings.is_empty(), "{:?}", warnings(&s));
}

#[test]
fn rpm_name_and_argument_quirks() {
    // Checked with rpmspec 4.18: a bare `%version#` is the (undefined) name `version#`, and
    // an undefined macro with arguments keeps its name but has its arguments expanded.
    let s = spec(
        "Source0: https://x/v%version#/%{name}-%version.tgz\n\
         Source1: %{pypi_source %{name} %{version} zip}\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source0", "https://x/v%version#/foo-1.2.tgz"),
            ("Source1", "%{pypi_source foo 1.2 zip}"),
        ])
    );
}

#[test]
fn define_bodies_drop_backslashes_and_braces_group() {
    let s = spec(
        "%define dashed %(echo %{version} | sed -e 's/\\\\./-/g')\n%define grouped {a b}\n\
         Source0: https://x/%{dashed}/%{grouped}.tgz\n",
    );
    assert_eq!(list(&s), pairs(&[("Source0", "https://x/1-2/a b.tgz")]));
}

#[test]
fn shell_and_lua_expansions_are_evaluated_without_running_anything() {
    let s = spec(
        "%global commit 0123456789abcdef\n\
         Source0: https://x/%{lua: print(string.sub(rpm.expand(\"%{commit}\"), 1, 7))}.tgz\n\
         Source1: https://x/%(c=%{commit}; echo $c | cut -c1-4)-%(echo %{version} | tr . _).tgz\n\
         Source2: https://x/%(c=%{commit}; echo ${c:0:7}).tgz\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source0", "https://x/0123456.tgz"),
            ("Source1", "https://x/0123-1_2.tgz"),
            ("Source2", "https://x/0123456.tgz"),
        ])
    );
    assert!(s.warnings.is_empty(), "{:?}", warnings(&s));
}

/// Found by the `spec_list` fuzz target (fuzz/corpus/spec_list/finding-*): a macro whose
/// expansion uses itself twice, here through `%(...)`, recursed 64 levels deep in every branch
/// (2^64 expansions) instead of stopping at the first too-deep level as rpm does.
#[test]
fn branching_recursion_stops_at_the_depth_limit() {
    let s = spec("%define r %(echo %{r} %{r})\nSource0: x-%{r}\n");
    assert_eq!(s.entries.len(), 1);
    assert!(
        warnings(&s)
            .iter()
            .any(|w| w.contains("too many levels of recursion")),
        "{:?}",
        warnings(&s)
    );
}

#[test]
fn exponential_definitions_stop_at_the_work_budget() {
    let mut body: String = (1..=40)
        .map(|i| format!("%define a{i} %{{a{}}}%{{a{}}}\n", i - 1, i - 1))
        .collect();
    body = format!("%define a0 x\n{body}Source0: y-%{{a40}}\nSource1: z-%{{a1}}\n");
    let s = spec(&body);
    let w = warnings(&s);
    assert!(
        w.iter()
            .any(|w| w.starts_with("line 47: Source0: macro expansion stopped after")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("line 48: Source1: macro expansion stopped after")),
        "a spent budget is reported where it stops an entry: {w:?}"
    );
    assert!(s.entries[0].value.len() <= super::macros::MAX_EXPANSION);
}

/// Found by the `spec_list` fuzz target (fuzz/corpus/spec_list/finding-one-step-past-the-limit):
/// the size limit was checked between constructs, so the last one could go past it.
#[test]
fn expansions_never_exceed_the_size_limit() {
    let s = spec("%define big %{rep x 1000000}\nSource0: %{big}%{big}%{big}\n");
    // The limit applies to the expanded line, "Source0: " included.
    assert_eq!(
        s.entries[0].value.len(),
        super::macros::MAX_EXPANSION - "Source0: ".len()
    );
    assert!(
        warnings(&s)[0].contains("the expansion exceeds 1048576 bytes; stopped"),
        "{:?}",
        warnings(&s)
    );
}

#[test]
fn huge_repetitions_are_refused() {
    let s = spec(
        "Source0: a-%{rep x 999999999}\nSource1: b-%{lua: print(('x'):rep(60000):rep(60000))}\n",
    );
    assert_eq!(
        list(&s),
        pairs(&[
            ("Source0", "a-%{rep x 999999999}"),
            ("Source1", "b-%{lua: print(('x'):rep(60000):rep(60000))}")
        ])
    );
    assert_eq!(s.warnings.len(), 2, "{:?}", warnings(&s));
}
