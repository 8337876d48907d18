//! The interpreter against the Lua idioms of real specs, and against rpm's own Lua.

use crate::spec::macros::Engine;

const DEFINES: &[(&str, &str)] = &[
    ("version", "1.2~rc3"),
    ("commit", "8f0a3b2c1d9e7f6a5b4c3d2e1f0a9b8c7d6e5f4a"),
    ("name", "Foo-Bar"),
    ("url", "https://example.org/foo"),
];

fn engine() -> Engine {
    let mut e = Engine::new();
    for (n, b) in DEFINES {
        e.push(n, b, None, false);
    }
    e
}

fn ev(code: &str) -> String {
    let mut e = engine();
    let out = e.expand(&format!("%{{lua:{code}}}"));
    assert!(e.issues.is_empty(), "{code:?}: {:?}", e.issues);
    out
}

fn refused(code: &str) -> String {
    let mut e = engine();
    let whole = format!("%{{lua:{code}}}");
    assert_eq!(e.expand(&whole), whole, "left as written");
    assert_eq!(e.issues.len(), 1, "{code:?}: {:?}", e.issues);
    e.issues[0].to_string()
}

/// Scripts whose output must be what rpm's Lua prints.
const AGAINST_RPM: &[&str] = &[
    r#"print(string.sub(rpm.expand("%{commit}"), 1, 7))"#,
    r#"print(rpm.expand("%{commit}"):sub(1, 7))"#,
    r#"print((string.gsub(rpm.expand("%{version}"), "~", "-")))"#,
    r#"print(rpm.expand("%{version}"):gsub("~", "-"))"#,
    r#"print(macros.version:gsub("%.", "_"))"#,
    r#"local v = macros["version"] v = v:gsub("~.*$", "") print(v)"#,
    r#"print(string.lower(macros.name), macros.name:upper(), #macros.name, macros.name:len())"#,
    r#"print(macros.nosuch, macros.nosuch == nil)"#,
    r#"local major = string.match(macros.version, "^(%d+)") print(major)"#,
    r#"print(macros.version:match("(%d+)%.(%d+)"))"#,
    r#"print(("a.b.c"):find(".", 1, true), ("a.b.c"):find("%.", 3))"#,
    r#"print(macros.url:gsub("^https?://", ""):gsub("/", "-"))"#,
    r#"print((macros.url:gsub("^https?://", "")))"#,
    r#"print(string.rep("ab", 3, "-"), ("x"):rep(0), string.reverse("abc"))"#,
    r#"print(string.format("%s-%d-%05.1f-%x-%3s|%-3s|", "a", 3, 2.5, 255, "b", "c"))"#,
    r#"print(1, 2.0, 4/2, 7//2, -7//2, 7%3, -7%3, 2^10, 1e3, 0x10, 10/3)"#,
    r#"print(1 == 1.0, "1" == 1, 1 < 2, "a" < "b", not nil, nil and 1, false or "x")"#,
    r#"print("10" + 1, "3" * "4", 1 .. 2, tostring(12), tonumber("0x1f"), tonumber("z"))"#,
    r#"if macros.version:find("~") then print("pre") elseif true then print("no") end"#,
    r#"if macros.nosuch then print("a") else print("b") end"#,
    r#"x = "q" do local x = "inner" end print(x)"#,
    r#"print(type(macros.version), type(1), type(nil), type(print))"#,
    r#"print("a\tb\\c\"d", 'e\'f', [[g]])"#,
    r#"-- a comment
print("after") --[[ a long
comment ]] print(";")"#,
    r#"print(("THE (quick) fox"):gsub("%f[%a]%a+", "W"))"#,
    r#"print(("hello world"):gsub("o", "0", 1))"#,
    r#"print(("abc"):gsub("", "-"))"#,
    r#"print(("abc"):gsub("%w", "%0%0"), ("abc"):gsub("(b)", "[%1]"))"#,
    r#"print(string.sub("abcdef", -3), string.sub("abcdef", 2, -2), string.sub("abc", 5))"#,
];

#[test]
fn agrees_with_rpms_lua() {
    let Ok(v) = std::process::Command::new("rpm").arg("--version").output() else {
        panic!("rpm is required to check the Lua subset against rpm's own Lua");
    };
    assert!(v.status.success());
    for code in AGAINST_RPM {
        let mut cmd = std::process::Command::new("rpm");
        for (n, b) in DEFINES {
            cmd.args(["--define", &format!("{n} {b}")]);
        }
        let out = cmd
            .args(["--eval", &format!("%{{lua:{code}}}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "rpm failed on {code:?}");
        let want = String::from_utf8(out.stdout).unwrap();
        // rpm --eval ends its output with a newline of its own.
        let want = want.strip_suffix('\n').unwrap_or(&want);
        assert_eq!(ev(code), want, "{code:?}");
    }
}

#[test]
fn refusals_name_the_reason() {
    for (code, reason) in [
        ("for i = 1, 3 do print(i) end", "'for' statements"),
        ("print(os.getenv('HOME'))", "\"os\" is not available"),
        ("rpm.define('x 1')", "rpm.define is not available"),
        ("print(io.open('/etc/passwd'))", "\"io\" is not available"),
        ("local t = {} print(t)", "tables"),
        ("function f() end", "'function' statements"),
        ("print(string.char(65))", "string.char is not available"),
        ("print(('x'):rep(100000))", "string.rep of more than"),
        (
            "print(('a'):rep(600):find('a*a*a*a*a*b'))",
            "takes too long",
        ),
        ("print(1 // 0)", "integer division by zero"),
        ("print('unfinished)", "an unfinished string"),
        ("print('é')", "non-ASCII"),
        ("macros.x = 1", "assignments to table fields"),
        ("print(", "expected an expression"),
    ] {
        let why = refused(code);
        assert!(why.contains(reason), "{code:?}: {why:?} lacks {reason:?}");
        assert!(why.starts_with("Lua macro %{lua:"), "{why}");
        assert!(why.ends_with("(upcache never runs Lua)"), "{why}");
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = format!("print({}1{})", "(".repeat(10_000), ")".repeat(10_000));
    assert!(refused(&deep).contains("nested too deeply"));
    let unary = format!("print({}1)", "not ".repeat(10_000));
    assert!(refused(&unary).contains("nested too deeply"));
}
