#include "jobs/json_safe.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

namespace wb {

bool json_depth_within(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > max_depth) return false;
        break;
      case ']':
      case '}':
        --depth;
        break;
      default:
        break;
    }
  }
  return true;
}

namespace {

// `text` with each number too large for a double (1e999, which nlohmann refuses as
// "number overflow", failing the whole body) written as null, as nlohmann writes a
// non-finite number; nullopt when there is none. Strings are left as they are.
std::optional<std::string> overflows_as_null(std::string_view text) {
  std::string out;
  bool changed = false, in_string = false, escaped = false;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      out += c;
      ++i;
      continue;
    }
    if (c == '"') in_string = true;
    if (c != '-' && (c < '0' || c > '9')) {
      out += c;
      ++i;
      continue;
    }
    size_t end = i + 1;
    while (end < text.size() && std::string_view("0123456789+-.eE").find(text[end]) != std::string_view::npos) ++end;
    const std::string number(text.substr(i, end - i));
    char* stop = nullptr;
    const double v = std::strtod(number.c_str(), &stop);
    if (stop == number.c_str() + number.size() && std::isinf(v)) {
      out += "null";
      changed = true;
    } else {
      out += number;
    }
    i = end;
  }
  if (!changed) return std::nullopt;
  return out;
}

}  // namespace

std::optional<nlohmann::json> parse_json_bounded(std::string_view text, int max_depth) {
  if (!json_depth_within(text, max_depth)) return std::nullopt;
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    // One field out of a double's range must not cost the whole answer (a result
    // whose remaining_credits says 1e999 still names the video).
    auto fixed = overflows_as_null(text);
    if (!fixed) return std::nullopt;
    j = nlohmann::json::parse(*fixed, nullptr, false);
    if (j.is_discarded()) return std::nullopt;
  }
  return j;
}

namespace {

void write_float(std::string& out, double x) {
  if (!std::isfinite(x)) {  // as nlohmann writes them
    out += "null";
    return;
  }
  double magnitude = std::fabs(x);
  auto format = magnitude == 0 || (magnitude >= 1e-7 && magnitude < 1e16) ? std::chars_format::fixed
                                                                          : std::chars_format::general;
  char digits[400];  // a fixed 1e16 or a general DBL_MAX needs far fewer
  auto end = std::to_chars(digits, digits + sizeof digits, x, format).ptr;
  out.append(digits, end);
}

void new_line(std::string& out, int indent, int level) {
  if (indent < 0) return;
  out += '\n';
  out.append(static_cast<size_t>(indent) * static_cast<size_t>(level), ' ');
}

void write_json(std::string& out, const nlohmann::json& j, int indent, int level) {
  if (j.is_number_float()) return write_float(out, j.get<double>());
  if (!j.is_structured() || j.empty()) {
    out += j.dump();
    return;
  }
  out += j.is_object() ? '{' : '[';
  bool first = true;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!first) out += ',';
    first = false;
    new_line(out, indent, level + 1);
    if (j.is_object()) {
      out += nlohmann::json(it.key()).dump();
      out += indent < 0 ? ":" : ": ";
    }
    write_json(out, *it, indent, level + 1);
  }
  new_line(out, indent, level);
  out += j.is_object() ? '}' : ']';
}

}  // namespace

void append_json_text(std::string& out, const nlohmann::json& j, int indent, int level) {
  write_json(out, j, indent, level);
}

std::string json_text(const nlohmann::json& j, int indent) {
  std::string out;
  write_json(out, j, indent, 0);
  return out;
}

}  // namespace wb
