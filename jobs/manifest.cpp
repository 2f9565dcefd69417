#include "jobs/manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "jobs/chain.h"
#include "jobs/output.h"
#include "jobs/paths.h"
#include "jobs/util.h"
#include "jobs/yaml_safe.h"

namespace wb {

namespace {

const std::set<std::string> kShotFields = {"id",         "prompt",     "negative_prompt", "image",
                                           "last_frame", "audio_url",  "duration",        "resolution",
                                           "seed"};
const std::set<std::string> kTopFields = {"batch", "priority", "budget_credits", "base_dir", "defaults", "shots"};
constexpr size_t kMaxPromptBytes = 10000;

// What in a prompt is not text a person sees, as a problem ("" when none):
// tabs and line breaks (\n, \r\n) are text; any other C0 control (a YAML
// "\0" or "\e"), a lone \r, DEL, C1 controls (U+0080-U+009F), bidi overrides
// and isolates (U+202A-U+202E, U+2066-U+2069, which make a text read otherwise
// than it runs) and zero-width characters (U+200B-U+200D, U+2060, U+FEFF) are
// not. The UTF-8 sequences are matched as bytes.
std::string unseen_character(std::string_view s) {
  auto at = [](size_t i, const char* what, unsigned cp, const char* hint = "") {
    char buf[128];
    std::snprintf(buf, sizeof buf, "holds %s U+%04X at byte %zu%s", what, cp, i, hint);
    return std::string(buf);
  };
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    auto next = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
    if (c == '\r' && next(1) != '\n') return at(i, "a lone carriage return", c);
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
      return at(i, "a control character", c, " (a \\0 or \\e escape?)");
    if (c == 0xC2 && next(1) >= 0x80 && next(1) <= 0x9F) return at(i, "a C1 control character", next(1));
    if (c == 0xE2 && next(1) == 0x80 && next(2) >= 0x8B && next(2) <= 0x8D)
      return at(i, "a zero-width character", 0x2000u + (next(2) - 0x80));
    if (c == 0xE2 && next(1) == 0x80 && next(2) >= 0xAA && next(2) <= 0xAE)
      return at(i, "a bidi override", 0x2000u + (next(2) - 0x80));
    if (c == 0xE2 && next(1) == 0x81 && next(2) == 0xA0) return at(i, "a zero-width character", 0x2060);
    if (c == 0xE2 && next(1) == 0x81 && next(2) >= 0xA6 && next(2) <= 0xA9)
      return at(i, "a bidi isolate", 0x2040u + (next(2) - 0x80));
    if (c == 0xEF && next(1) == 0xBB && next(2) == 0xBF) return at(i, "a zero-width character", 0xFEFF);
  }
  return "";
}

std::string stem_of(const std::string& file) {
  std::string base = basename_of(file);
  auto dot = base.find_last_of('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

class Checker {
 public:
  Checker(const ManifestRules& rules, std::vector<ManifestProblem>& problems)
      : rules_(rules), problems_(problems) {}

  void problem(const YamlValue& at, const std::string& field, const std::string& msg) {
    problems_.push_back({at.line, field, msg});
  }

  // Refuses duplicate keys, which yaml-cpp would otherwise let the last one win.
  bool unique_keys(const YamlValue& map, const std::string& where) {
    std::set<std::string_view> seen;
    bool ok = true;
    for (const auto& [key, value] : map.entries) {
      if (!key.is_scalar()) {
        problem(key, where, "keys must be plain strings");
        ok = false;
        continue;
      }
      if (!seen.insert(key.text).second) {
        problem(key, where.empty() ? key.text : where + "." + key.text,
                "appears twice");
        ok = false;
      }
    }
    return ok;
  }

  std::optional<std::string> scalar(const YamlValue& n, const std::string& field) {
    if (!n.is_scalar()) {
      problem(n, field, "must be a single value");
      return std::nullopt;
    }
    return n.text;
  }

  std::optional<long long> integer(const YamlValue& n, const std::string& field, long long lo,
                                   long long hi) {
    long long v = 0;
    if (!yaml_integer(n, v) || n.text.find('.') != std::string::npos) {
      problem(n, field, "must be a whole number");
      return std::nullopt;
    }
    // yaml-cpp reads 010 as octal (8) and 0x10 as 16: only plain decimal is taken.
    std::string_view digits = n.text;
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) digits.remove_prefix(1);
    if (digits.size() > 1 && digits[0] == '0') {
      problem(n, field, "must be written in decimal without leading zeros, got '" + n.text + "'");
      return std::nullopt;
    }
    if (v < lo || v > hi) {
      problem(n, field,
              "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                  std::to_string(v));
      return std::nullopt;
    }
    return v;
  }

  MediaRef media(const YamlValue& n, const std::string& field, const std::string& base_dir,
                 MediaKind kind) {
    MediaRef ref;
    if (n.is_map()) return frame_of_shot(n, field, kind);
    auto v = scalar(n, field);
    if (!v) return ref;
    if (v->empty()) {
      problem(n, field, "is empty");
      return ref;
    }
    if (v->rfind("https://", 0) == 0) {
      if (v->size() > 2048 || v->find_first_of(" \t\r\n") != std::string::npos)
        problem(n, field, "is not a valid URL");
      else
        ref.url = *v;
      return ref;
    }
    if (v->find("://") != std::string::npos) {
      problem(n, field, "only https URLs or local paths are accepted, got '" + *v + "'");
      return ref;
    }
    std::string abs = absolute_lexical(*v, base_dir);
    if (!rules_.check_media) {
      ref.path = abs;
      return ref;
    }
    try {
      MediaFile f = read_media(abs, rules_.input_roots, rules_.max_media_bytes, kind);
      ref.path = f.path;
    } catch (const Error& e) {
      problem(n, field, e.what());
    }
    return ref;
  }

  // `{shot: sh010, frame: last}`: a frame of another shot of this batch (jobs/chain.h;
  // check_chains() checks the shot exists once every shot is read).
  MediaRef frame_of_shot(const YamlValue& n, const std::string& field, MediaKind kind) {
    MediaRef ref;
    if (kind != MediaKind::image) {
      problem(n, field, "must be a single value: a frame of another shot is only for image and last_frame");
      return ref;
    }
    if (!unique_keys(n, field)) return ref;
    for (const auto& [key, value] : n.entries)
      if (key.text != "shot" && key.text != "frame")
        problem(key, field + "." + key.text, "unknown field (a frame of another shot takes shot and frame)");
    const YamlValue* shot = n.find("shot");
    const YamlValue* frame = n.find("frame");
    if (!shot) problem(n, field + ".shot", "is required: the id of the shot to take the frame from");
    if (!frame) problem(n, field + ".frame", "is required: first or last");
    std::optional<std::string> id = shot ? scalar(*shot, field + ".shot") : std::nullopt;
    std::optional<std::string> word = frame ? scalar(*frame, field + ".frame") : std::nullopt;
    if (id && !is_valid_id(*id)) {
      problem(*shot, field + ".shot", "must be a shot id ([A-Za-z0-9._-]{1,64}), got '" + *id + "'");
      id.reset();
    }
    if (word && !is_frame_word(*word)) {
      problem(*frame, field + ".frame", "must be first or last, got '" + *word + "'");
      word.reset();
    }
    if (id && word) {
      ref.shot = *id;
      ref.frame = *word;
      ref.line = n.line;
    }
    return ref;
  }

 private:
  const ManifestRules& rules_;
  std::vector<ManifestProblem>& problems_;
};

}  // namespace

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    if (len == 2 && c < 0xc2) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    if (len == 1 && c == 0) return false;
    i += len;
  }
  return true;
}

ManifestResult parse_manifest(const std::string& text, const std::string& file,
                              const ManifestRules& rules) {
  ManifestResult result;
  auto& problems = result.problems;
  if (static_cast<long long>(text.size()) > rules.max_bytes) {
    problems.push_back({0, "(file)",
                        "is " + std::to_string(text.size()) + " bytes, over the limit of " +
                            std::to_string(rules.max_bytes)});
    return result;
  }
  if (!is_valid_utf8(text)) {
    problems.push_back({0, "(file)", "is not valid UTF-8 text"});
    return result;
  }
  YamlValue root;
  YamlError yerr;
  if (!parse_yaml_safely(text, YamlLimits{static_cast<size_t>(rules.max_shots) * 24 + 256, 8}, root,
                        yerr)) {
    problems.push_back({yerr.line, "(yaml)", yerr.message});
    return result;
  }
  if (!root.is_map()) {
    problems.push_back({root.line, "(top)", "the manifest must be a mapping with a shots: list"});
    return result;
  }

  Checker check(rules, problems);
  Manifest m;
  m.sha256 = sha256_hex(text);
  check.unique_keys(root, "");
  for (const auto& [key, value] : root.entries)
    if (key.is_scalar() && !kTopFields.count(key.text))
      check.problem(key, key.text, "unknown field (known: batch, priority, budget_credits, base_dir, defaults, shots)");

  if (const YamlValue* n = root.find("batch")) {
    if (auto v = check.scalar(*n, "batch")) {
      if (!is_valid_id(*v))
        check.problem(*n, "batch", "must match [A-Za-z0-9._-]{1,64}, got '" + *v + "'");
      m.batch = *v;
    }
  } else {
    m.batch = stem_of(file);
    if (!is_valid_id(m.batch))
      problems.push_back({0, "batch",
                          "the file name '" + m.batch +
                              "' is not a valid batch name; add batch: with [A-Za-z0-9._-]{1,64}"});
  }
  if (const YamlValue* n = root.find("priority"))
    if (auto v = check.integer(*n, "priority", -1000000, 1000000)) m.priority = static_cast<int>(*v);
  if (const YamlValue* n = root.find("budget_credits")) {
    double v = 0;
    if (!yaml_number(*n, v) || !(v >= 0) || v > 1e12)
      check.problem(*n, "budget_credits", "must be a number of credits, 0 or more");
    else
      m.budget_credits = v;
  }
  m.base_dir = dirname_of(absolute_lexical(file, "/"));
  if (file.empty() || file.front() != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd)) m.base_dir = dirname_of(absolute_lexical(file, cwd));
  }
  if (const YamlValue* n = root.find("base_dir")) {
    if (auto v = check.scalar(*n, "base_dir")) {
      if (v->empty() || v->front() != '/')
        check.problem(*n, "base_dir", "must be an absolute path");
      else
        m.base_dir = absolute_lexical(*v, "/");
      m.base_dir_given = true;
    }
  }

  const YamlValue* defaults_node = root.find("defaults");
  if (defaults_node && !defaults_node->is_map())
    check.problem(*defaults_node, "defaults", "must be a mapping of shot fields");
  const YamlValue* defaults = defaults_node && defaults_node->is_map() ? defaults_node : nullptr;
  if (defaults) {
    check.unique_keys(*defaults, "defaults");
    for (const auto& [key, value] : defaults->entries) {
      std::string k = key.is_scalar() ? key.text : "";
      if (k == "id")
        check.problem(key, "defaults.id", "ids cannot have a default");
      else if (!kShotFields.count(k))
        check.problem(key, "defaults." + k, "unknown shot field");
    }
  }

  const YamlValue* shots_node = root.find("shots");
  if (!shots_node) {
    problems.push_back({0, "shots", "is required: a list of shots"});
  } else if (!shots_node->is_sequence()) {
    check.problem(*shots_node, "shots", "must be a list of shots");
  } else if (shots_node->items.empty()) {
    check.problem(*shots_node, "shots", "is empty; a batch needs at least one shot");
  } else if (static_cast<int>(shots_node->items.size()) > rules.max_shots) {
    check.problem(*shots_node, "shots",
                  "has " + std::to_string(shots_node->items.size()) + " shots, over limits.max_shots_per_manifest (" +
                      std::to_string(rules.max_shots) + ")");
  } else {
    const auto& shots = shots_node->items;
    std::set<std::string> ids;
    m.shots.reserve(shots.size());
    for (size_t i = 0; i < shots.size(); ++i) {
      const YamlValue& s = shots[i];
      std::string where = "shots[" + std::to_string(i) + "]";
      if (!s.is_map()) {
        check.problem(s, where, "must be a mapping with id and prompt");
        continue;
      }
      check.unique_keys(s, where);
      ShotSpec spec;
      spec.line = s.line;
      if (const YamlValue* n = s.find("id")) {
        if (auto v = check.scalar(*n, where + ".id")) {
          if (!is_valid_id(*v))
            check.problem(*n, where + ".id", "must match [A-Za-z0-9._-]{1,64}, got '" + *v + "'");
          else if (!ids.insert(*v).second)
            check.problem(*n, where + ".id", "'" + *v + "' is used by an earlier shot");
          else if (std::string clash = shot_id_clash(*v); !clash.empty())
            check.problem(*n, where + ".id", clash);
          spec.id = *v;
          where = "shots[" + spec.id + "]";
        }
      } else {
        check.problem(s, where + ".id", "is required");
      }
      for (const auto& [key, value] : s.entries)
        if (key.is_scalar() && !kShotFields.count(key.text))
          check.problem(key, where + "." + key.text, "unknown shot field");
      // A field comes from the shot, else from defaults (a later duplicate key
      // wins, as it did with yaml-cpp's nodes; duplicates are refused above).
      auto field = [&](const char* name) -> const YamlValue* {
        const YamlValue* v = s.find_last(name);
        if (!v && defaults) v = defaults->find_last(name);
        return !v || v->is_null() ? nullptr : v;  // null = absent
      };
      if (const YamlValue* n = field("prompt")) {
        if (auto v = check.scalar(*n, where + ".prompt")) {
          if (v->find_first_not_of(" \t\r\n") == std::string::npos)
            check.problem(*n, where + ".prompt", "is empty");
          else if (v->size() > kMaxPromptBytes)
            check.problem(*n, where + ".prompt", "is longer than 10000 bytes");
          else if (std::string bad = unseen_character(*v); !bad.empty())
            check.problem(*n, where + ".prompt", bad);
          spec.prompt = *v;
        }
      } else {
        check.problem(s, where + ".prompt", "is required");
      }
      if (const YamlValue* n = field("negative_prompt"))
        if (auto v = check.scalar(*n, where + ".negative_prompt")) {
          if (v->size() > kMaxPromptBytes)
            check.problem(*n, where + ".negative_prompt", "is longer than 10000 bytes");
          else if (std::string bad = unseen_character(*v); !bad.empty())
            check.problem(*n, where + ".negative_prompt", bad);
          spec.negative_prompt = *v;
        }
      if (const YamlValue* n = field("image"))
        spec.image = check.media(*n, where + ".image", m.base_dir, MediaKind::image);
      else
        check.problem(s, where + ".image", "is required: the first frame to animate");
      if (const YamlValue* n = field("last_frame"))
        spec.last_frame = check.media(*n, where + ".last_frame", m.base_dir, MediaKind::image);
      if (const YamlValue* n = field("audio_url"))
        spec.audio = check.media(*n, where + ".audio_url", m.base_dir, MediaKind::audio);
      if (const YamlValue* n = field("duration"))
        if (auto v = check.integer(*n, where + ".duration", 2, 15)) spec.duration = static_cast<int>(*v);
      if (const YamlValue* n = field("resolution")) {
        if (auto v = check.scalar(*n, where + ".resolution")) {
          if (*v != "720P" && *v != "1080P")
            check.problem(*n, where + ".resolution", "must be 720P or 1080P, got '" + *v + "'");
          spec.resolution = *v;
        }
      }
      if (const YamlValue* n = field("seed")) {
        if (!(n->is_scalar() && n->text.empty()))
          if (auto v = check.integer(*n, where + ".seed", 0, 2147483647)) spec.seed = *v;
      }
      m.shots.push_back(std::move(spec));
    }
  }
  for (auto& p : check_chains(m.shots)) problems.push_back(std::move(p));
  if (problems.empty()) result.manifest = std::move(m);
  return result;
}

ManifestResult load_manifest(const std::string& file, const ManifestRules& rules, const std::string& as_file) {
  ManifestResult result;
  int fd = ::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
  if (fd < 0) {
    result.problems.push_back({0, "(file)", std::string("cannot open: ") + std::strerror(errno)});
    return result;
  }
  struct stat st {};
  std::string text;
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (!ok) {
    result.problems.push_back({0, "(file)", "is not a regular file"});
  } else if (st.st_size > rules.max_bytes) {
    result.problems.push_back({0, "(file)",
                               "is " + std::to_string(st.st_size) + " bytes, over limits.max_manifest_bytes (" +
                                   std::to_string(rules.max_bytes) + ")"});
  } else {
    text.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < text.size()) {
      ssize_t n = ::read(fd, text.data() + got, text.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    text.resize(got);
  }
  ::close(fd);
  if (!result.problems.empty()) return result;
  return parse_manifest(text, as_file.empty() ? file : as_file, rules);
}

std::string format_problems(const std::string& file, const std::vector<ManifestProblem>& problems) {
  std::string out;
  for (const auto& p : problems)
    out += file + ":" + std::to_string(p.line) + ": " + p.field + ": " + p.message + "\n";
  return out;
}

std::string with_base_dir(const std::string& text, const std::string& base_dir) {
  // Insert before the first line that is content (not blank, comment, directive or ---).
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    std::string_view line(text.data() + pos, (end == std::string::npos ? text.size() : end) - pos);
    size_t first = line.find_first_not_of(" \t\r");
    bool skip = first == std::string_view::npos || line[first] == '#' || line[first] == '%' ||
                line.substr(first, 3) == "---";
    if (!skip) break;
    pos = end == std::string::npos ? text.size() : end + 1;
  }
  std::string line = "base_dir: " + nlohmann::json(base_dir).dump() + "  # added by wanbatch submit\n";
  std::string out = text.substr(0, pos) + line + text.substr(pos);
  return out;
}

}  // namespace wb
