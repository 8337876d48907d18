//! The evaluator against the idioms of real specs, and against bash itself.

use super::*;

fn eval(cmd: &str) -> Result<String> {
    let mut budget = MAX_STEPS;
    super::eval(cmd, &mut budget)
}

fn ev(cmd: &str) -> String {
    eval(cmd).unwrap_or_else(|e| panic!("{cmd:?} refused: {e}"))
}

fn refused(cmd: &str) -> String {
    match eval(cmd) {
        Ok(out) => panic!("{cmd:?} evaluated to {out:?}, expected a refusal"),
        Err(e) => e.to_string(),
    }
}

/// Commands whose output must be what bash (and GNU coreutils and sed) print.
const AGAINST_BASH: &[&str] = &[
    "echo 1.2.3|cut -d. -f1,2",
    "echo 1.2.3 | cut -d. -f 1-2",
    "echo 1.2.3 | cut -d . -f3",
    "echo 1.2.3 | cut -d. -f2-",
    "echo 1.2.3 | cut -d. -f-2",
    "echo 1.2.3 | cut -f1",
    "echo 1.2.3 | cut -s -d, -f1",
    "echo abcdef0123456789 | cut -c1-7",
    "echo 1.2.3 | tr . _",
    "echo 1.2.3|tr -d .",
    "echo 4.1-3 | tr - _",
    "echo 4--1 | tr -s '-' '_'",
    "echo Hello | tr '[:upper:]' '[:lower:]'",
    "echo hello | tr a-z A-Z",
    "echo abc | tr abc x",
    "echo 'a\\nb'",
    "echo -n x; echo y",
    "echo -e 'a\\tb'",
    "printf '%s-%s\\n' a b c",
    "printf '%05d|%-4s|%.2s|%x' 42 ab abcdef 255",
    "printf %s x",
    "c=0123456789abcdef; echo ${c:0:7}",
    "c=0123456789abcdef; echo ${c:3}",
    "c=0123456789abcdef; echo ${c: -4}",
    "c=0123456789abcdef; echo ${c:2:-10}",
    "c=0123456789abcdef; echo ${#c}",
    "v=1.2.3; echo ${v%.*} ${v%%.*} ${v#*.} ${v##*.}",
    "v=1.2.3; echo ${v/./_} ${v//./_} ${v/#1/x} ${v/%3/y}",
    "v=v1.2; echo ${v#v}",
    "v=abc; echo ${v^^} ${v^}",
    "v=; echo ${v:-def} ${v-unset} ${v:+set}",
    "v='a  b'; echo $v; echo \"$v\"",
    "tr '.' '-' <<<1.2.3",
    "cut -d. -f1 <<< 1.2",
    "echo v1.2.3 | sed 's/^v//'",
    "echo 1.2.3 | sed -e 's/\\./_/g'",
    "echo 1.2.3 | sed -e 's,\\.,-,g'",
    "echo 1.2.3 | sed 's/\\./\\-/g'",
    "echo 1.2.3 | sed -e 's/\\./-/'",
    "echo 1.2.3 | sed 's/\\(.*\\)\\.\\(.*\\)/\\2-\\1/'",
    "echo 1.2.3 | sed -E 's/([0-9]+)\\.([0-9]+)/\\2:\\1/'",
    "echo abcabc | sed 's/b/X/2'",
    "echo abcabc | sed 's/b/[&]/g'",
    "echo 'a b' | sed 's/[[:space:]]/_/g'",
    "echo a.b-c | sed 's/[.-]/_/g'",
    "echo abc | sed 's/x*/-/g'",
    "echo abc | sed 's/b*/-/g'",
    "echo ABC | sed 's/b/x/I'",
    "echo 1.2 | sed -e 's/1/one/' -e 's/2/two/'",
    "echo 1.2 | sed 's/1/one/;s/2/two/'",
    "echo 1.2 | sed -r 's/[0-9]+$/X/'",
    "echo 'a$b' | sed 's/a$/x/'",
    "echo '^a' | sed 's/a^/x/;s/^^/y/'",
    "echo 'a*b' | sed 's/*/+/'",
    "basename /a/b/c.tar.gz .tar.gz",
    "basename /a/b/",
    "dirname /a/b/c",
    "dirname c",
    "dirname /c",
    "echo $(echo 1.2.3 | tr . _)-x",
    "echo \"$(echo a)\" `echo b`",
    "echo abcdef | head -c 3",
    "printf 'a\\nb\\nc\\n' | head -n 2",
    "x=1; y=$x.2; echo $y",
    "echo '*' \"?\" \\[",
    "echo 1.2.3 | sed 's/\\./-/g' | tr - _ | cut -d_ -f2",
    "echo a 2>/dev/null; echo b >/dev/null",
    "echo $\"x\"",
    "echo 100% off",
    "# a comment\necho x # trailing",
    "echo x;",
    "echo %{version} | tr . _",
    "echo 1.2~rc1 | tr '~' -",
    "v=1.2~rc1; echo ${v%~*}",
    "echo {a} {}",
];

#[test]
fn agrees_with_bash() {
    let Ok(out) = std::process::Command::new("bash").arg("--version").output() else {
        panic!("bash is required to check the evaluator against it");
    };
    assert!(out.status.success());
    for cmd in AGAINST_BASH {
        let want = std::process::Command::new("bash")
            .args(["--norc", "--noprofile", "-c", cmd])
            .env_clear()
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(want.status.success(), "bash failed on {cmd:?}");
        assert_eq!(ev(cmd), String::from_utf8(want.stdout).unwrap(), "{cmd:?}");
    }
}

#[test]
fn idioms_of_real_specs() {
    assert_eq!(ev("c=8f0a3b2c1d; echo ${c:0:7}"), "8f0a3b2\n");
    assert_eq!(ev("echo 2.5.2 | tr '.' '_'"), "2_5_2\n");
    assert_eq!(ev("tr '.' '-' <<<0.1.2"), "0-1-2\n");
    assert_eq!(ev("echo v1.0 | sed 's/^v//'"), "1.0\n");
    assert_eq!(ev("echo 2021.09.18 |sed -e 's,\\.,-,g'"), "2021-09-18\n");
    assert_eq!(ev(""), "");
}

#[test]
fn refusals_name_the_reason() {
    for (cmd, reason) in [
        ("uname -m", "\"uname\" is not a command upcache evaluates"),
        (
            "pkg-config --modversion gtk+-3.0",
            "\"pkg-config\" is not a command",
        ),
        ("echo $HOME", "$HOME is not set by the command"),
        ("echo ${QTDIR}", "$QTDIR is not set"),
        ("echo *.spec", "pathname"),
        ("echo a{b,c}", "brace expansion"),
        ("echo {1..3}", "brace expansion"),
        ("echo ~/x", "tilde expansion"),
        ("x=~; echo $x", "tilde expansion"),
        ("ls | wc -l", "\"ls\" is not a command"),
        ("cat /etc/os-release", "\"cat\" is not a command"),
        ("echo x > /tmp/f", "redirections other than to /dev/null"),
        ("true && echo y", "\"&&\" lists"),
        ("test -f x || echo n", "\"||\" lists"),
        ("sleep 1 & echo y", "background jobs"),
        ("(echo a)", "subshells"),
        ("echo $((1+2))", "arithmetic"),
        ("echo $1", "positional"),
        ("sed 's/a/b/' file.txt", "reading files"),
        ("cut -f1 /etc/passwd", "reading files"),
        ("echo a | sed 's/a\\|b/x/'", "alternation"),
        ("echo a | sed -n 's/a/b/p'", "sed -n"),
        ("echo a | sed '/a/d'", "only s/// is evaluated"),
        ("echo a | sed 's/\\(a\\)*/x/'", "repeated group"),
        ("echo a | tr -c a b", "tr -c"),
        ("echo ${x}", "$x is not set"),
        ("echo 'unterminated", "unterminated quote"),
        ("echo é", "non-ASCII"),
        ("; echo x", "without a command"),
        ("x=1 echo $x", "assignments before a command"),
        ("eval echo x", "\"eval\" is not a command"),
        ("printf '%1000000d' 1", "a width or precision above 4096"),
    ] {
        let why = refused(cmd);
        assert!(why.contains(reason), "{cmd:?}: {why:?} lacks {reason:?}");
    }
}

#[test]
fn output_is_bounded() {
    let why = refused(
        "x=aaaaaaaaaaaaaaaa; echo $x | sed 's/a/&&&&&&&&/g;s/a/&&&&&&&&/g;s/a/&&&&&&&&/g;s/a/&&&&&&&&/g'",
    );
    assert!(why.contains("exceeds"), "{why}");
    let long = "x".repeat(2000);
    let why = refused(&format!("v={long}{long}; echo ${{v//*x*x*x*/y}}"));
    assert!(why.contains("too long"), "{why}");
    let nested = "$(echo ".repeat(20) + "x" + &")".repeat(20);
    assert!(refused(&format!("echo {nested}")).contains("nested too deeply"));
}
