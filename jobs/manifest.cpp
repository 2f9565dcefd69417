#include "jobs/manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
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

// What in a prompt is not text a person sees, as a problem ("" when none).
// The rule, by Unicode general category (docs/MANIFEST.md, "prompt"):
// - Cc, control characters, are refused, except tab, line feed and a carriage
//   return followed by a line feed (a CRLF line break): text;
// - Cf, format characters, are refused, all of them (soft hyphen, the bidi
//   marks, embeddings, overrides and isolates, zero-width space, joiner and
//   non-joiner, word joiner, invisible operators, BOM, Arabic number signs,
//   interlinear annotation, tags U+E0000-U+E007F, ...): none is seen, each
//   can make a prompt read otherwise than it is sent. ZWJ too: emoji joined
//   by it still say what they say without it;
// - Zl and Zp (U+2028, U+2029): line breaks nobody's editor shows as such;
// - Cs, surrogates (a YAML "\uD800" escape), and what is past U+10FFFF;
// - noncharacters (U+FDD0-U+FDEF and the last two of every plane).
// Unassigned code points inside the Cf blocks (U+2065, U+E0000, U+E0002-
// U+E001F) are refused with them. The position is 1-based, in characters
// (code points), as an editor counts them.
struct Invisible {
  const char* what;
  const char* category;
};

std::optional<Invisible> invisible(char32_t cp) {
  struct Range {
    char32_t from, to;
  };
  static constexpr Range kFormat[] = {
      {0x00AD, 0x00AD},   {0x0600, 0x0605},   {0x061C, 0x061C},   {0x06DD, 0x06DD},   {0x070F, 0x070F},
      {0x0890, 0x0891},   {0x08E2, 0x08E2},   {0x180E, 0x180E},   {0x200B, 0x200F},   {0x202A, 0x202E},
      {0x2060, 0x206F},   {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0x110BD, 0x110BD}, {0x110CD, 0x110CD},
      {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0000, 0xE007F}};
  if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) return Invisible{"a control character", "Cc"};
  for (const auto& r : kFormat)
    if (cp >= r.from && cp <= r.to) return Invisible{"a format character", "Cf"};
  if (cp == 0x2028) return Invisible{"a line separator", "Zl"};
  if (cp == 0x2029) return Invisible{"a paragraph separator", "Zp"};
  if (cp >= 0xD800 && cp <= 0xDFFF) return Invisible{"a surrogate", "Cs"};
  if (cp > 0x10FFFF) return Invisible{"beyond Unicode", "not a character"};
  if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) return Invisible{"a noncharacter", "Cn"};
  return std::nullopt;
}

std::string unseen_character(std::string_view s) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size();) {
    ++chars;
    const auto c = static_cast<unsigned char>(s[i]);
    // Decoded leniently: a YAML escape may have made any code point's bytes.
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool whole = len > 0 && i + len <= s.size();
    for (size_t k = 1; whole && k < len; ++k) whole = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
    char buf[160];
    if (!whole) {
      std::snprintf(buf, sizeof buf, "holds a byte 0x%02X that is not UTF-8 at character %zu", c, chars);
      return buf;
    }
    char32_t cp = len == 1 ? c : len == 2 ? c & 0x1Fu : len == 3 ? c & 0x0Fu : c & 0x07u;
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3Fu);
    const bool text = cp == '\t' || cp == '\n' || (cp == '\r' && i + 1 < s.size() && s[i + 1] == '\n');
    if (!text)
      if (auto bad = invisible(cp)) {
        const char* hint = cp == 0 || cp == 0x1B ? " (a \\0 or \\e escape?)"
                           : cp == '\r'          ? " (a carriage return without a line feed)"
                                                 : "";
        std::snprintf(buf, sizeof buf, "holds an invisible character U+%04X (%s, %s) at character %zu%s",
                      static_cast<unsigned>(cp), bad->what, bad->category, chars, hint);
        return buf;
      }
    i += len;
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

std::optional<TextFault> text_fault(std::string_view s) {
  int line = 1, column = 1;
  for (size_t i = 0; i < s.size(); ++column) {
    const auto c = static_cast<unsigned char>(s[i]);
    auto byte = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (byte(k) >> 6) == 2;
    // The shortest form only, no surrogates (U+D800-U+DFFF), nothing past U+10FFFF (RFC 3629).
    if (ok && len == 2) ok = c >= 0xC2;
    if (ok && len == 3) ok = !(c == 0xE0 && byte(1) < 0xA0) && !(c == 0xED && byte(1) > 0x9F);
    if (ok && len == 4) ok = c <= 0xF4 && !(c == 0xF0 && byte(1) < 0x90) && !(c == 0xF4 && byte(1) > 0x8F);
    if (c == 0) return TextFault{line, column, "holds a NUL byte (a manifest is text)"};
    if (!ok) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "is not valid UTF-8 text: byte 0x%02X", c);
      return TextFault{line, column, buf};
    }
    if (c == '\n') {
      ++line;
      column = 0;
    }
    i += len;
  }
  return std::nullopt;
}

bool is_valid_utf8(std::string_view s) { return !text_fault(s); }

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
  if (auto fault = text_fault(text)) {  // yaml-cpp would stop at a NUL and say "line 0"
    problems.push_back({fault->line, "(file)",
                        fault->what + " at line " + std::to_string(fault->line) +
                            ", column " + std::to_string(fault->column)});
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
