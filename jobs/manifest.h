// A shot list as a studio writes it (docs/MANIFEST.md), parsed and validated as
// untrusted input. Parsing never throws: every problem found is returned with its
// line and field so that `wanbatch validate` can list them all at once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace wb {

// A media field: a remote https URL, a local file (canonical path), or a frame
// of another shot's finished video of the same batch (a shot chain, jobs/chain.h:
// `shot` is that shot's id, `frame` is "first" or "last").
struct MediaRef {
  std::string url;
  std::string path;
  std::string shot;
  std::string frame;
  int line = 0;  // a frame reference's line in the manifest (not stored)
  bool empty() const { return url.empty() && path.empty() && shot.empty(); }
  bool is_frame() const { return !shot.empty(); }
};

struct ShotSpec {
  std::string id;
  std::string prompt;
  std::string negative_prompt;  // empty: the API's default
  MediaRef image;
  MediaRef last_frame;
  MediaRef audio;
  int duration = 5;
  std::string resolution = "720P";
  std::optional<int64_t> seed;
  int line = 0;
};

struct Manifest {
  std::string batch;
  int priority = 0;
  std::optional<double> budget_credits;  // the batch never spends more
  std::string base_dir;
  bool base_dir_given = false;
  std::vector<ShotSpec> shots;
  std::string sha256;  // of the file's bytes
};

struct ManifestProblem {
  int line = 0;
  std::string field;
  std::string message;
};

struct ManifestRules {
  std::vector<std::string> input_roots;
  int max_shots = 1000;
  long long max_bytes = 1 << 20;
  long long max_media_bytes = 50ll << 20;
  bool check_media = true;  // open local media now (validate, accept)
};

struct ManifestResult {
  std::optional<Manifest> manifest;  // set only when problems is empty
  std::vector<ManifestProblem> problems;
};

// `file` is the manifest's path: its stem names the batch by default and its
// folder is the base for relative media paths when base_dir is absent.
ManifestResult parse_manifest(const std::string& text, const std::string& file,
                              const ManifestRules& rules);

// Reads the file (bounded by rules.max_bytes, never blocking on a FIFO) and parses it.
// `as_file`, when given, is where the manifest logically sits (its name and folder
// count as in parse_manifest) while its bytes are read from `file`: the daemon
// reads a claimed manifest from spool.incoming/.claimed/ as if it were still in
// spool.incoming.
ManifestResult load_manifest(const std::string& file, const ManifestRules& rules,
                             const std::string& as_file = "");

// "file:line: field: message" lines, one per problem.
std::string format_problems(const std::string& file, const std::vector<ManifestProblem>& problems);

// Returns the manifest text with a top-level `base_dir:` line inserted.
std::string with_base_dir(const std::string& text, const std::string& base_dir);

// Where `s` stops being text (a NUL byte, or bytes that are not UTF-8: a
// truncated or overlong sequence, a surrogate, past U+10FFFF): its 1-based
// line and column (in characters), and what is there. Nothing when it is text.
struct TextFault {
  int line = 0;
  int column = 0;
  std::string what;  // "holds a NUL byte (...)", "is not valid UTF-8 text: byte 0xE9"
};
std::optional<TextFault> text_fault(std::string_view s);
bool is_valid_utf8(std::string_view s);

}  // namespace wb
