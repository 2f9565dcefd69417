// Shot chains in the manifest (jobs/chain.h): a frame of another shot of the
// batch as image or last_frame, and every way such a reference can be wrong,
// each named with its file, line and field.
#include <doctest/doctest.h>

#include "jobs/chain.h"
#include "jobs/manifest.h"
#include "jobs/shot.h"
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
  }
  ManifestResult parse(const std::string& text) { return parse_manifest(text, root + "/media/seq.yaml", rules); }
  // Every problem as validate prints it.
  std::string problems(const std::string& text) {
    auto r = parse(text);
    CHECK_FALSE(r.manifest);
    return format_problems("seq.yaml", r.problems);
  }
};

const char* kChain = R"(batch: seq
shots:
  - id: sh010
    prompt: "a boat leaves"
    image: frames/a.png
  - id: sh020
    prompt: "the boat crosses"
    image: {shot: sh010, frame: last}
    last_frame:
      shot: sh030
      frame: first
  - id: sh030
    prompt: "the boat arrives"
    image: frames/a.png
  - id: sh040
    prompt: "night falls"
    image: {shot: sh020, frame: last}
)";

}  // namespace

TEST_CASE("image and last_frame take a frame of another shot of the batch") {
  Fixture f;
  auto r = f.parse(kChain);
  REQUIRE_MESSAGE(r.manifest, format_problems("seq.yaml", r.problems));
  const auto& shots = r.manifest->shots;
  CHECK(shots[1].image.shot == "sh010");
  CHECK(shots[1].image.frame == "last");
  CHECK(shots[1].image.path.empty());
  CHECK(shots[1].image.url.empty());
  CHECK(shots[1].last_frame.shot == "sh030");
  CHECK(shots[1].last_frame.frame == "first");
  CHECK_FALSE(shots[0].image.is_frame());
  // The reference survives the shot record (a restart reads it back).
  Shot s;
  s.batch = "seq";
  s.spec = shots[1];
  Shot back = shot_from_json(shot_to_json(s));
  CHECK(back.spec.image.shot == "sh010");
  CHECK(back.spec.image.frame == "last");
  CHECK(back.spec.last_frame.shot == "sh030");
  CHECK(back.spec.last_frame.frame == "first");
  CHECK(back.spec.image.is_frame());
}

TEST_CASE("a reference to a shot the batch does not have is refused with file:line") {
  Fixture f;
  std::string text = kChain;
  text.replace(text.find("{shot: sh020"), 12, "{shot: sh999");
  CHECK(f.problems(text) == "seq.yaml:17: shots[sh040].image: no shot 'sh999' in this batch\n");
}

TEST_CASE("a shot that takes a frame of itself is refused") {
  Fixture f;
  std::string text = kChain;
  text.replace(text.find("{shot: sh020"), 12, "{shot: sh040");
  CHECK(f.problems(text) ==
        "seq.yaml:17: shots[sh040].image: refers to its own shot; a shot cannot start from its own video\n");
}

TEST_CASE("a cycle of references is refused once, with the loop spelled out") {
  Fixture f;
  std::string text = kChain;
  // sh010 now opens with sh040's frame: sh010 <- sh020 <- sh040 <- sh010.
  text.replace(text.find("image: frames/a.png"), 19, "image: {shot: sh040, frame: first}");
  CHECK(f.problems(text) ==
        "seq.yaml:8: shots[sh020].image: takes a frame from sh010, which closes a cycle "
        "(sh010 -> sh040 -> sh020 -> sh010): no shot of it could ever start\n");
}

TEST_CASE("a frame word other than first or last, a missing or unknown key, and audio are refused") {
  Fixture f;
  std::string text = kChain;
  text.replace(text.find("frame: last}"), 11, "frame: middle");
  CHECK(f.problems(text) == "seq.yaml:8: shots[sh020].image.frame: must be first or last, got 'middle'\n");

  text = kChain;
  text.replace(text.find("{shot: sh010, frame: last}"), 26, "{shot: sh010}");
  CHECK(f.problems(text) == "seq.yaml:8: shots[sh020].image.frame: is required: first or last\n");

  text = kChain;
  text.replace(text.find("{shot: sh010, frame: last}"), 26, "{shot: sh010, frame: last, at: 3}");
  CHECK(f.problems(text) ==
        "seq.yaml:8: shots[sh020].image.at: unknown field (a frame of another shot takes shot and frame)\n");

  text = kChain;
  text.replace(text.find("{shot: sh010, frame: last}"), 26, "{shot: 'a/b', frame: last}");
  CHECK(f.problems(text) ==
        "seq.yaml:8: shots[sh020].image.shot: must be a shot id ([A-Za-z0-9._-]{1,64}), got 'a/b'\n");

  text = kChain;
  text += "    audio_url: {shot: sh010, frame: last}\n";
  CHECK(f.problems(text) ==
        "seq.yaml:18: shots[sh040].audio_url: must be a single value: a frame of another shot is only for image "
        "and last_frame\n");
}

TEST_CASE("the chain below a shot is every shot that needs its video, directly or not, in manifest order") {
  Fixture f;
  auto r = f.parse(kChain);
  REQUIRE(r.manifest);
  const auto& shots = r.manifest->shots;
  CHECK(chain_descendants(shots, "sh010") == std::vector<std::string>{"sh020", "sh040"});
  CHECK(chain_descendants(shots, "sh030") == std::vector<std::string>{"sh020", "sh040"});
  CHECK(chain_descendants(shots, "sh020") == std::vector<std::string>{"sh040"});
  CHECK(chain_descendants(shots, "sh040").empty());
}

TEST_CASE("forgetting a shot's frame URLs clears only those taken from other shots") {
  Fixture f;
  auto r = f.parse(kChain);
  REQUIRE(r.manifest);
  Shot s;
  s.spec = r.manifest->shots[1];  // image and last_frame both frames of other shots
  s.image_url = "https://cdn.example/old-take-last.png";
  s.last_frame_url = "https://cdn.example/old-take-first.png";
  forget_frame_urls(s);
  CHECK(s.image_url.empty());
  CHECK(s.last_frame_url.empty());
  Shot plain;
  plain.spec = r.manifest->shots[0];  // a local file
  plain.image_url = "https://cdn.example/a.png";
  forget_frame_urls(plain);
  CHECK(plain.image_url == "https://cdn.example/a.png");
}
