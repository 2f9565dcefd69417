#include <doctest/doctest.h>
#include <unistd.h>

#include "jobs/manifest.h"
#include "jobs/yaml_safe.h"
#include "tests/support.h"

using namespace wb;

namespace {

struct Fixture {
  std::string root = test::cwd();
  ManifestRules rules;
  Fixture() {
    test::mkdirs(root + "/media/frames");
    test::write(root + "/media/frames/a.png", test::png());
    rules.input_roots = {root + "/media"};
    rules.max_shots = 50;
  }
  ManifestResult parse(const std::string& text, const std::string& name = "night.yaml") {
    return parse_manifest(text, root + "/media/" + name, rules);
  }
  // The single problem's "field: message", or "" when valid.
  std::string problem(const std::string& text) {
    auto r = parse(text);
    if (r.problems.empty()) return "";
    return r.problems[0].field + ": " + r.problems[0].message;
  }
};

const char* kGood = R"(batch: lakeside-night
priority: 3
defaults:
  resolution: 1080P
  duration: 8
  negative_prompt: "blur"
shots:
  - id: sh010
    prompt: "wind over the lake"
    image: frames/a.png
    seed: 42
  - id: sh020
    prompt: "rain"
    image: https://cdn.example.com/f.png
    duration: 3
    resolution: 720P
)";

}  // namespace

TEST_CASE("a good manifest parses with defaults merged and paths resolved") {
  Fixture f;
  auto r = f.parse(kGood);
  REQUIRE(r.problems.empty());
  const Manifest& m = *r.manifest;
  CHECK(m.batch == "lakeside-night");
  CHECK(m.priority == 3);
  REQUIRE(m.shots.size() == 2);
  CHECK(m.shots[0].resolution == "1080P");
  CHECK(m.shots[0].duration == 8);
  CHECK(m.shots[0].negative_prompt == "blur");
  CHECK(m.shots[0].seed == 42);
  CHECK(m.shots[0].image.path == f.root + "/media/frames/a.png");
  CHECK(m.shots[0].line == 8);
  CHECK(m.shots[1].image.url == "https://cdn.example.com/f.png");
  CHECK(m.shots[1].duration == 3);
  CHECK(m.shots[1].resolution == "720P");
  CHECK_FALSE(m.shots[1].seed);
  CHECK(m.sha256.size() == 64);
}

TEST_CASE("the batch name defaults to the file name without extension") {
  Fixture f;
  auto r = f.parse("shots: [{id: a, prompt: p, image: frames/a.png}]\n", "reel-2.yaml");
  REQUIRE(r.manifest);
  CHECK(r.manifest->batch == "reel-2");
  auto bad = f.parse("shots: [{id: a, prompt: p, image: frames/a.png}]\n", "my reel.yaml");
  REQUIRE(bad.problems.size() == 1);
  CHECK(bad.problems[0].field == "batch");
}

TEST_CASE("base_dir moves where relative paths resolve") {
  Fixture f;
  test::mkdirs(f.root + "/media/other");
  test::write(f.root + "/media/other/b.png", test::png(1));
  auto r = f.parse("base_dir: " + f.root + "/media/other\nshots: [{id: a, prompt: p, image: b.png}]\n");
  REQUIRE(r.manifest);
  CHECK(r.manifest->base_dir_given);
  CHECK(r.manifest->shots[0].image.path == f.root + "/media/other/b.png");
}

TEST_CASE("each rule refuses with its field and line") {
  Fixture f;
  const std::string img = ", image: frames/a.png";
  CHECK(f.problem("shots: [{prompt: p" + img + "}]") == "shots[0].id: is required");
  CHECK(f.problem("shots: [{id: a" + img + "}]") == "shots[a].prompt: is required");
  CHECK(f.problem("shots: [{id: a, prompt: '  '" + img + "}]") == "shots[a].prompt: is empty");
  CHECK(f.problem("shots: [{id: a, prompt: p}]") == "shots[a].image: is required: the first frame to animate");
  CHECK(f.problem("shots: [{id: '../x', prompt: p" + img + "}]").find("must match") != std::string::npos);
  CHECK(f.problem("shots: [{id: 'a/b', prompt: p" + img + "}]").find("must match") != std::string::npos);
  CHECK(f.problem("batch: '..'\nshots: [{id: a, prompt: p" + img + "}]").find("batch: must match") == 0);
  CHECK(f.problem("shots: [{id: a, prompt: p, duration: 1" + img + "}]") ==
        "shots[a].duration: must be between 2 and 15, got 1");
  CHECK(f.problem("shots: [{id: a, prompt: p, duration: 16" + img + "}]").find("between 2 and 15") != std::string::npos);
  CHECK(f.problem("shots: [{id: a, prompt: p, duration: 5.5" + img + "}]") == "shots[a].duration: must be a whole number");
  CHECK(f.problem("shots: [{id: a, prompt: p, resolution: 4K" + img + "}]") ==
        "shots[a].resolution: must be 720P or 1080P, got '4K'");
  CHECK(f.problem("shots: [{id: a, prompt: p, seed: -1" + img + "}]").find("shots[a].seed") == 0);
  CHECK(f.problem("shots: [{id: a, prompt: p, seed: 99999999999" + img + "}]").find("shots[a].seed") == 0);
  CHECK(f.problem("shots: [{id: a, prompt: p, colour: red" + img + "}]") == "shots[a].colour: unknown shot field");
  CHECK(f.problem("shots: []") == "shots: is empty; a batch needs at least one shot");
  CHECK(f.problem("batch: x\n") == "shots: is required: a list of shots");
  CHECK(f.problem("shots: {a: 1}") == "shots: must be a list of shots");
  CHECK(f.problem("defaults: {id: x}\nshots: [{id: a, prompt: p" + img + "}]") == "defaults.id: ids cannot have a default");
  CHECK(f.problem("shots: [{id: a, prompt: p, image: 'ftp://x/y.png'}]").find("only https URLs") != std::string::npos);
  CHECK(f.problem("shots: [{id: a, prompt: p, image: 'http://x/y.png'}]").find("only https URLs") != std::string::npos);
}

TEST_CASE("duplicate shot ids and duplicate keys are refused") {
  Fixture f;
  auto r = f.parse("shots:\n  - {id: a, prompt: p, image: frames/a.png}\n  - {id: a, prompt: q, image: frames/a.png}\n");
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].message == "'a' is used by an earlier shot");
  CHECK(r.problems[0].line == 3);
  auto k = f.parse("batch: x\nbatch: y\nshots: [{id: a, prompt: p, image: frames/a.png}]\n");
  REQUIRE_FALSE(k.problems.empty());
  CHECK(k.problems[0].message == "appears twice");
}

TEST_CASE("a shot id whose files would be a batch file is refused, in any case") {
  Fixture f;
  for (const char* id : {"report", "REPORT", "Report"}) {
    CAPTURE(id);
    auto r = f.parse(std::string("shots:\n  - {id: a, prompt: p, image: frames/a.png}\n  - {id: ") + id +
                     ", prompt: p, image: frames/a.png}\n");
    REQUIRE(r.problems.size() == 1);
    CHECK(r.problems[0].field == "shots[1].id");
    CHECK(r.problems[0].line == 3);
    CHECK(r.problems[0].message.find("is reserved: the shot's " + std::string(id) +
                                     ".json would be the batch's report.json") != std::string::npos);
  }
  CHECK(f.problem("shots: [{id: report.json, prompt: p, image: frames/a.png}]").empty());
  CHECK(f.problem("shots: [{id: reports, prompt: p, image: frames/a.png}]").empty());
}

TEST_CASE("a manifest read from one place counts as sitting where it is said to be") {
  Fixture f;
  test::mkdirs(f.root + "/media/spool/.claimed");
  test::write(f.root + "/media/spool/.claimed/reel.yaml", "shots: [{id: a, prompt: p, image: ../frames/a.png}]\n");
  auto r = load_manifest(f.root + "/media/spool/.claimed/reel.yaml", f.rules, f.root + "/media/spool/reel.yaml");
  REQUIRE_MESSAGE(r.manifest, format_problems("reel.yaml", r.problems));
  CHECK(r.manifest->base_dir == f.root + "/media/spool");
  CHECK(r.manifest->batch == "reel");
  CHECK(r.manifest->shots[0].image.path == f.root + "/media/frames/a.png");
}

TEST_CASE("anchors, aliases, tags and several documents are refused") {
  Fixture f;
  CHECK(f.problem("a: &x [1]\nb: *x\n").find("anchors") != std::string::npos);
  CHECK(f.problem("shots: [*nothing]\n") != "");
  CHECK(f.problem("shots: !!binary aGVsbG8=\n").find("tags") != std::string::npos);
  CHECK(f.problem("shots: []\n---\nshots: []\n").find("only one YAML document") != std::string::npos);
}

TEST_CASE("an alias bomb is refused before anything expands") {
  Fixture f;
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'j'; ++c)
    bomb += std::string(1, c) + ": &" + c + " [*" + char(c - 1) + ", *" + char(c - 1) + ", *" + char(c - 1) + "]\n";
  auto r = f.parse(bomb);
  REQUIRE_FALSE(r.problems.empty());
  CHECK(r.problems[0].field == "(yaml)");
}

TEST_CASE("deep nesting, oversized and non-UTF-8 files are refused") {
  Fixture f;
  CHECK(f.problem(std::string(100, '[') + std::string(100, ']')).find("(yaml)") == 0);
  f.rules.max_bytes = 100;
  CHECK(f.problem(std::string(200, '#')).find("over the limit") != std::string::npos);
  f.rules.max_bytes = 1 << 20;
  CHECK(f.problem("batch: caf\xe9\nshots: []\n") == "(file): is not valid UTF-8 text: byte 0xE9 at line 1, column 11");
  // The shortest form only, no surrogates, nothing past U+10FFFF (RFC 3629).
  for (const char* bad : {"\xC0\x80", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF0\x80\x80\xAF", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80"})
    CHECK(f.problem(std::string("batch: b\nshots: [] # ") + bad + "\n").find("is not valid UTF-8 text: byte") != std::string::npos);
  CHECK(f.problem("shots: [\n") .find("(yaml)") == 0);
}

TEST_CASE("a raw NUL byte is reported at its line and column, 1-based, not at line 0") {
  Fixture f;
  const std::string text = std::string("batch: b\nshots:\n  - {id: a, prompt: \"caf\xC3\xA9") + '\0' +
                           "\", image: frames/a.png}\n";
  auto r = f.parse(text);
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].line == 3);
  CHECK(r.problems[0].field == "(file)");
  CHECK(r.problems[0].message == "holds a NUL byte (a manifest is text) at line 3, column 26");
  CHECK(format_problems("m.yaml", r.problems).rfind("m.yaml:3: (file): holds a NUL byte", 0) == 0);
  // At the very start and after a CRLF.
  CHECK(f.problem(std::string(1, '\0')) == "(file): holds a NUL byte (a manifest is text) at line 1, column 1");
  CHECK(f.problem(std::string("batch: b\r\n") + '\0') ==
        "(file): holds a NUL byte (a manifest is text) at line 2, column 1");
}

TEST_CASE("more shots than the cap are refused") {
  Fixture f;
  f.rules.max_shots = 2;
  std::string text = "shots:\n";
  for (int i = 0; i < 3; ++i) text += "  - {id: s" + std::to_string(i) + ", prompt: p, image: frames/a.png}\n";
  CHECK(f.problem(text).find("over limits.max_shots_per_manifest (2)") != std::string::npos);
}

TEST_CASE("local media outside the input roots, missing or not an image is refused") {
  Fixture f;
  test::write(f.root + "/outside.png", test::png());
  test::write(f.root + "/media/frames/notes.png", "just text, not a picture");
  REQUIRE(::symlink("/etc/shadow", (f.root + "/media/frames/shadow.png").c_str()) == 0);
  CHECK(f.problem("shots: [{id: a, prompt: p, image: ../outside.png}]").find("outside the configured input_roots") != std::string::npos);
  CHECK(f.problem("shots: [{id: a, prompt: p, image: " + f.root + "/outside.png}]").find("outside the configured input_roots") != std::string::npos);
  CHECK(f.problem("shots: [{id: a, prompt: p, image: frames/missing.png}]").find("cannot open") != std::string::npos);
  CHECK(f.problem("shots: [{id: a, prompt: p, image: frames/notes.png}]").find("not a PNG") != std::string::npos);
  CHECK(f.problem("shots: [{id: a, prompt: p, image: frames/shadow.png}]").find("resolves to /etc/shadow, outside") !=
        std::string::npos);
  // A symlink inside the roots is refused too: name the file itself.
  REQUIRE(::symlink((f.root + "/media/frames/a.png").c_str(), (f.root + "/media/frames/alias.png").c_str()) == 0);
  CHECK(f.problem("shots: [{id: a, prompt: p, image: frames/alias.png}]").find("is a symlink") != std::string::npos);
}

TEST_CASE("with_base_dir inserts a top-level key that survives a reparse") {
  Fixture f;
  std::string text = "# my reel\n---\nshots: [{id: a, prompt: p, image: a.png}]\n";
  std::string out = with_base_dir(text, f.root + "/media/frames");
  CHECK(out.find("# my reel\n---\nbase_dir: ") == 0);
  auto r = f.parse(out);
  REQUIRE(r.manifest);
  CHECK(r.manifest->shots[0].image.path == f.root + "/media/frames/a.png");
}

TEST_CASE("problems format as file:line: field: message") {
  CHECK(format_problems("m.yaml", {{3, "shots[a].duration", "bad"}}) == "m.yaml:3: shots[a].duration: bad\n");
}

TEST_CASE("the one-pass YAML tree keeps kinds, lines and document order") {
  YamlValue v;
  YamlError e;
  REQUIRE(parse_yaml_safely("a: 1\nb:\n  - x\n  - {c: ~, d: ''}\ne:\n", YamlLimits{}, v, e));
  REQUIRE(v.is_map());
  REQUIRE(v.entries.size() == 3);
  CHECK(v.entries[0].first.text == "a");
  CHECK(v.find("a")->text == "1");
  CHECK(v.find("a")->line == 1);
  const YamlValue* b = v.find("b");
  REQUIRE(b);
  REQUIRE(b->is_sequence());
  REQUIRE(b->items.size() == 2);
  CHECK(b->line == 3);
  CHECK(b->items[0].text == "x");
  CHECK(b->items[1].line == 4);
  CHECK(b->items[1].find("c")->is_null());
  CHECK(b->items[1].find("d")->is_scalar());  // a quoted '' is a value, not null
  CHECK(v.find("e")->is_null());
  CHECK_FALSE(v.find("missing"));
  long long n = 0;
  CHECK(yaml_integer(*v.find("a"), n));
  CHECK(n == 1);
  CHECK_FALSE(yaml_integer(*b, n));
  YamlValue dup;
  REQUIRE(parse_yaml_safely("k: 1\nk: 2\n", YamlLimits{}, dup, e));
  CHECK(dup.find("k")->text == "1");
  CHECK(dup.find_last("k")->text == "2");
  YamlValue refused;
  CHECK_FALSE(parse_yaml_safely("a: &x 1\nb: *x\n", YamlLimits{}, refused, e));
  CHECK(e.line == 1);
}

TEST_CASE("a shot's null field falls back to nothing, not to the default, and an empty seed is no seed") {
  Fixture f;
  auto r = f.parse(
      "defaults: {seed: 7, negative_prompt: blur}\n"
      "shots:\n"
      "  - {id: a, prompt: p, image: frames/a.png, seed: ~, negative_prompt: ~}\n"
      "  - {id: b, prompt: p, image: frames/a.png, seed: ''}\n"
      "  - {id: c, prompt: p, image: frames/a.png}\n");
  REQUIRE(r.problems.empty());
  const auto& s = r.manifest->shots;
  CHECK_FALSE(s[0].seed);
  CHECK(s[0].negative_prompt.empty());
  CHECK_FALSE(s[1].seed);
  CHECK(s[1].negative_prompt == "blur");
  CHECK(s[2].seed == 7);
}

TEST_CASE("whole numbers are plain decimal: a leading zero or 0x is refused, not read as octal or hex") {
  Fixture f;
  auto one = [&](const std::string& field) {
    return f.problem("shots: [{id: a, prompt: p, image: frames/a.png, " + field + "}]\n");
  };
  CHECK(one("duration: 010").find("must be written in decimal without leading zeros, got '010'") != std::string::npos);
  CHECK(one("duration: 0x10").find("decimal") != std::string::npos);
  CHECK(one("seed: 0042").find("decimal") != std::string::npos);
  CHECK(one("seed: 0") == "");
  CHECK(one("duration: 10") == "");
  CHECK(f.problem("priority: -007\nshots: [{id: a, prompt: p, image: frames/a.png}]\n").find("decimal") !=
        std::string::npos);
}

TEST_CASE("prompts hold no control characters, and a negative prompt is capped like a prompt") {
  Fixture f;
  CHECK(f.problem("shots: [{id: a, prompt: \"a\\0b\", image: frames/a.png}]\n").find("control character") !=
        std::string::npos);
  CHECK(f.problem("shots: [{id: a, prompt: p, negative_prompt: \"x\\ey\", image: frames/a.png}]\n")
            .find("control character") != std::string::npos);
  CHECK(f.problem("shots: [{id: a, prompt: \"tab\\there\\nand a line\", image: frames/a.png}]\n") == "");
  CHECK(f.problem("shots: [{id: a, prompt: p, negative_prompt: " + std::string(10001, 'n') +
                  ", image: frames/a.png}]\n")
            .find("longer than 10000 bytes") != std::string::npos);
}

TEST_CASE("prompts refuse what a person cannot see: Cc but tab and line breaks, all of Cf, Zl, Zp, Cs, noncharacters") {
  Fixture f;
  struct Case {
    const char* text;  // YAML double-quoted, escapes or raw UTF-8 bytes
    const char* says;
  };
  const Case cases[] = {
      // Cc: C0 (but tab, LF and CRLF), DEL, C1.
      {"a\\0b", "invisible character U+0000 (a control character, Cc) at character 2 (a \\0 or \\e escape?)"},
      {"a\\eb", "U+001B (a control character, Cc)"},
      {"a\\x7Fb", "U+007F (a control character, Cc)"},
      {"a\\rb", "U+000D (a control character, Cc) at character 2 (a carriage return without a line feed)"},
      {"a\\x85b", "U+0085 (a control character, Cc) at character 2"},
      {"a\\u009Bb", "U+009B (a control character, Cc)"},
      // Cf, each group of the table.
      {"soft\\u00ADhyphen", "U+00AD (a format character, Cf) at character 5"},
      {"a\\u0600b", "U+0600 (a format character, Cf)"},
      {"a\\u061Cb", "U+061C (a format character, Cf)"},
      {"a\\u06DDb", "U+06DD (a format character, Cf)"},
      {"a\\u070Fb", "U+070F (a format character, Cf)"},
      {"a\\u0891b", "U+0891 (a format character, Cf)"},
      {"a\\u08E2b", "U+08E2 (a format character, Cf)"},
      {"a\\u180Eb", "U+180E (a format character, Cf)"},
      {"zero\\u200Bwidth", "U+200B (a format character, Cf) at character 5"},
      {"a\\u200Cb", "U+200C (a format character, Cf)"},
      {"a\\u200Db", "U+200D (a format character, Cf)"},
      {"caf\xC3\xA9 13 chars\\u200Ex", "U+200E (a format character, Cf) at character 14"},  // counted in characters, not bytes
      {"a\\u200Fb", "U+200F (a format character, Cf)"},
      {"pay \\u202Eoof", "U+202E (a format character, Cf) at character 5"},
      {"a\\u202Ab", "U+202A (a format character, Cf)"},
      {"a\\u2060b", "U+2060 (a format character, Cf)"},
      {"a\\u2064b", "U+2064 (a format character, Cf)"},
      {"a\\u2065b", "U+2065 (a format character, Cf)"},  // unassigned inside the block: refused with it
      {"a\xE2\x81\xA6" "b", "U+2066 (a format character, Cf)"},
      {"a\\u2069b", "U+2069 (a format character, Cf)"},
      {"a\\u206Fb", "U+206F (a format character, Cf)"},
      {"a\xEF\xBB\xBF" "b", "U+FEFF (a format character, Cf)"},
      {"a\\uFFF9b", "U+FFF9 (a format character, Cf)"},
      {"a\\U000110BDb", "U+110BD (a format character, Cf)"},
      {"a\\U000110CDb", "U+110CD (a format character, Cf)"},
      {"a\\U0001343Fb", "U+1343F (a format character, Cf)"},
      {"a\\U0001BCA0b", "U+1BCA0 (a format character, Cf)"},
      {"a\\U0001D173b", "U+1D173 (a format character, Cf)"},
      {"a\\U000E0000b", "U+E0000 (a format character, Cf)"},
      {"a\\U000E0001b", "U+E0001 (a format character, Cf)"},
      {"hi\xF3\xA0\x81\xA1" "b", "U+E0061 (a format character, Cf) at character 3"},  // a tag letter, raw
      {"a\\U000E007Fb", "U+E007F (a format character, Cf)"},
      // Zl, Zp.
      {"one\\Ltwo", "U+2028 (a line separator, Zl) at character 4"},
      {"one\xE2\x80\xA9two", "U+2029 (a paragraph separator, Zp) at character 4"},
      // Noncharacters. (Surrogates, Cs, never reach a prompt: raw, the file is not UTF-8; escaped, YAML refuses them.)
      {"a\\uFDD0b", "U+FDD0 (a noncharacter, Cn)"},
      {"a\\uFDEFb", "U+FDEF (a noncharacter, Cn)"},
      {"a\\uFFFEb", "U+FFFE (a noncharacter, Cn)"},
      {"a\xEF\xBF\xBF" "b", "U+FFFF (a noncharacter, Cn)"},
      {"a\\U0001FFFEb", "U+1FFFE (a noncharacter, Cn)"},
      {"a\\U0010FFFFb", "U+10FFFF (a noncharacter, Cn)"},
  };
  for (const auto& c : cases) {
    for (const char* field : {"prompt", "negative_prompt"}) {
      std::string shot = std::string(field) == "prompt" ? std::string("prompt: \"") + c.text + "\""
                                                         : std::string("prompt: p, negative_prompt: \"") + c.text + "\"";
      auto r = f.parse("batch: b\nshots:\n  - {id: a, image: frames/a.png}\n  - {id: c, " + shot +
                       ", image: frames/a.png}\n");
      // The first shot lacks a prompt; the second one's problem is the one under test, on line 4.
      bool found = false;
      for (const auto& p : r.problems)
        if (p.field.find(field) != std::string::npos && p.field.find("shots[c]") != std::string::npos) {
          found = true;
          CHECK(p.line == 4);
          CHECK_MESSAGE(p.message.find(c.says) != std::string::npos, c.text << " -> " << p.message);
        }
      CHECK_MESSAGE(found, field << ": " << c.text);
    }
  }
  // What is text stays text: CRLF line breaks, tabs, accents, emoji (with a variation selector),
  // right-to-left script without overrides, private use, the last characters before U+FFFE.
  CHECK(f.problem("shots: [{id: a, prompt: \"one\\r\\ntwo\\tthree caf\xC3\xA9 \xF0\x9F\x8C\x8A \xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D\", "
                  "image: frames/a.png}]\n") == "");
  CHECK(f.problem("shots: [{id: a, prompt: \"en\xE2\x80\x94" "dash \xE2\x80\x9Cquoted\xE2\x80\x9D\", image: frames/a.png}]\n") == "");
  CHECK(f.problem("shots: [{id: a, prompt: \"a\\uD800b\", image: frames/a.png}]\n") != "");
  CHECK(f.problem("shots: [{id: a, prompt: \"a\xED\xA0\x80" "b\", image: frames/a.png}]\n").find("not valid UTF-8") !=
        std::string::npos);
  CHECK(f.problem("shots: [{id: a, prompt: \"red \xE2\x9D\xA4\xEF\xB8\x8F heart \\uE000 \\uFFFD \\U0010FFFD\", image: frames/a.png}]\n") == "");
}
