// Implementation: the pages are built as strings from escaped pieces. The
// inline style and script are constants; their SHA-256 hashes go in the
// page's Content-Security-Policy, so nothing else runs even if an escape were
// ever missed, and nothing loads from anywhere but the page's own folder.
#include "jobs/contact_sheet.h"

#include <openssl/sha.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "jobs/credits.h"
#include "jobs/json_safe.h"
#include "jobs/util.h"

namespace wb {

namespace {
using nlohmann::json;

const char* kStyle = R"CSS(
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#16181c;color:#e6e6e6}
header{padding:16px 20px;background:#1f2329;border-bottom:1px solid #333}
h1{margin:0 0 6px;font-size:20px}
.totals span{margin-right:14px;white-space:nowrap}
.filters{margin-top:10px}
.filters button{background:#2b3038;color:#e6e6e6;border:1px solid #444;border-radius:4px;padding:3px 10px;margin:2px;cursor:pointer}
.filters button[aria-pressed=true]{background:#3d6fb6;border-color:#3d6fb6}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px;padding:16px 20px}
.card{background:#1f2329;border:1px solid #333;border-radius:6px;overflow:hidden}
.card[hidden]{display:none}
.media{aspect-ratio:16/9;background:#0c0d0f;display:flex;align-items:center;justify-content:center;color:#777}
.media video{width:100%;height:100%;object-fit:contain;background:#000}
.body{padding:8px 10px}
.id{font-weight:600}
.state{float:right;font-size:12px;padding:1px 6px;border-radius:3px;background:#444}
.state-DONE{background:#2e7d32}.state-FAILED,.state-REJECTED{background:#b23b3b}.state-HELD{background:#b27b1f}
.state-CANCELLED{background:#555}
.prompt{margin:6px 0;white-space:pre-wrap;word-break:break-word}
dl{display:grid;grid-template-columns:auto 1fr;gap:1px 10px;margin:6px 0;font-size:12px}
dt{color:#999}dd{margin:0}
.diff{color:#f0b35a;font-size:12px;margin:4px 0;padding-left:16px}
.reason{color:#f08a8a;font-size:12px;white-space:pre-wrap;word-break:break-word}
code{display:block;background:#0c0d0f;padding:4px 6px;border-radius:3px;font-size:12px;user-select:all;word-break:break-all}
table{border-collapse:collapse;margin:16px 20px}td,th{padding:4px 12px;border-bottom:1px solid #333;text-align:left}
a{color:#8ab4f8}
)CSS";

const char* kScript = R"JS(
(function(){
  var buttons=document.querySelectorAll('.filters button');
  function show(state){
    document.querySelectorAll('.card').forEach(function(c){
      c.hidden=!(state==='ALL'||c.getAttribute('data-state')===state);
    });
    buttons.forEach(function(b){b.setAttribute('aria-pressed',String(b.getAttribute('data-filter')===state));});
  }
  buttons.forEach(function(b){b.addEventListener('click',function(){show(b.getAttribute('data-filter'));});});
  var pick=/[?&]state=([A-Z_]+)/.exec(location.search);
  if(pick)show(pick[1]);
  document.body.setAttribute('data-ready','1');
})();
)JS";

std::string csp_hash(const char* text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  std::string s(text);
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  return "'sha256-" + base64_encode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest)) + "'";
}

// Nothing but the page's own folder (and, from file://, local files) can be
// loaded; only the inline style and script above run.
std::string head(const std::string& title, bool with_script) {
  std::string csp = "default-src 'none'; img-src 'self' file:; media-src 'self' file:; style-src " +
                    csp_hash(kStyle) + (with_script ? "; script-src " + csp_hash(kScript) : std::string()) +
                    "; base-uri 'none'; form-action 'none'";
  return "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
         "<meta http-equiv=\"Content-Security-Policy\" content=\"" +
         html_escape(csp) +
         "\">\n<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n<title>" + html_escape(title) +
         "</title>\n<style>" + kStyle + "</style></head>\n";
}

std::string time_text(int64_t ms) { return ms > 0 ? iso8601_utc(from_epoch_ms(ms)) : ""; }

std::string seconds_text(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh %02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm %02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

void row(std::string& out, const char* term, const std::string& value) {
  out += "<dt>";
  out += term;
  out += "</dt><dd>" + html_escape(value) + "</dd>";
}

// The order states are listed in, totals and filters alike.
const std::vector<ShotState>& all_states() {
  static const std::vector<ShotState> v = {ShotState::done,        ShotState::downloading, ShotState::fetching,
                                           ShotState::in_flight,   ShotState::submitting,  ShotState::pending,
                                           ShotState::held,        ShotState::failed,      ShotState::rejected,
                                           ShotState::cancelled};
  return v;
}

std::string card(const Shot& s, const SheetContext& ctx) {
  const std::string id = html_escape(s.spec.id);
  const std::string state = to_string(s.state);
  std::string out = "<article class=\"card\" data-shot=\"" + id + "\" data-state=\"" + html_escape(state) + "\">\n";
  out += "<div class=\"media\">";
  if (s.state == ShotState::done) {
    out += "<video controls preload=\"none\" src=\"" + id + ".mp4\"";
    if (ctx.posters.count(s.spec.id)) out += " poster=\"" + id + ".jpg\"";
    out += "></video>";
  } else {
    out += html_escape(state == "DONE" ? "" : "no video yet");
  }
  out += "</div>\n<div class=\"body\"><span class=\"state state-" + html_escape(state) + "\">" + html_escape(state) +
         "</span><span class=\"id\">" + id + "</span>\n";
  out += "<p class=\"prompt\">" + html_escape(s.spec.prompt) + "</p>\n<dl>";
  json video;
  if (!s.video_json.empty())
    if (auto v = parse_json_bounded(s.video_json); v && v->is_object()) video = *v;
  std::string resolution = s.spec.resolution;
  std::string duration = std::to_string(s.spec.duration) + " s";
  if (video.is_object()) {
    int w = video.value("width", 0), h = video.value("height", 0);
    double d = video.value("duration_seconds", 0.0);
    resolution += " (got " + std::to_string(w) + "x" + std::to_string(h) + ")";
    char buf[48];
    std::snprintf(buf, sizeof buf, " (got %.2f s)", d);
    duration += buf;
  }
  row(out, "seed", s.spec.seed ? std::to_string(*s.spec.seed) : "random");
  row(out, "resolution", resolution);
  row(out, "duration", duration);
  row(out, "cost", s.cost ? credits_text(to_micro(*s.cost)) + " credits" : "-");
  row(out, "render time",
      s.submitted_ms && s.completed_ms > s.submitted_ms
          ? seconds_text(static_cast<double>(s.completed_ms - s.submitted_ms) / 1000.0)
          : "-");
  row(out, "take", std::to_string(s.take));
  if (!s.changes.empty()) {
    std::string changed;
    for (const auto& c : s.changes) changed += (changed.empty() ? "" : ", ") + c;
    row(out, "changed", changed);
  }
  if (s.removed) row(out, "removed", "left the manifest in a later revision");
  if (!s.request_id.empty()) row(out, "request_id", s.request_id);
  out += "</dl>\n";
  if (video.is_object() && video.contains("differences") && video["differences"].is_array() &&
      !video["differences"].empty()) {
    out += "<ul class=\"diff\">";
    for (const auto& d : video["differences"])
      if (d.is_string()) out += "<li>" + html_escape(d.get<std::string>()) + "</li>";
    out += "</ul>\n";
  }
  if (!s.reason.empty()) out += "<p class=\"reason\">" + html_escape(s.reason) + "</p>\n";
  if (auto it = ctx.retry_commands.find(s.spec.id); it != ctx.retry_commands.end() && !it->second.empty())
    out += "<code>" + html_escape(it->second) + "</code>\n";
  out += "</div></article>\n";
  return out;
}
}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

SheetCard sheet_card(const Shot& s, const SheetContext& ctx) {
  SheetCard c;
  c.state = to_string(s.state);
  if (s.cost) c.spent_micro += to_micro(*s.cost);
  c.spent_micro += s.earlier_cost_micro;  // earlier takes (revisions)
  if (s.submitted_ms && s.completed_ms > s.submitted_ms)
    c.render_seconds = static_cast<double>(s.completed_ms - s.submitted_ms) / 1000.0;
  c.html = card(s, ctx);
  return c;
}

void BatchSheet::add(const SheetCard& c) {
  ++shots_;
  ++states_[c.state];
  spent_micro_ += c.spent_micro;
  if (c.render_seconds) render_seconds_ += *c.render_seconds;
  cards_ += c.html;
}

std::vector<std::string> BatchSheet::pieces(const BatchRecord& b, const SheetContext& ctx) && {
  std::string out = head(b.name + " - wanbatch", true);
  out += "<body>\n<header><h1>" + html_escape(b.name) + "</h1>\n<div class=\"totals\">";
  out += "<span data-total=\"shots\">" + std::to_string(shots_) + " shots</span>";
  for (ShotState st : all_states())
    if (auto it = states_.find(to_string(st)); it != states_.end())
      out += "<span data-total=\"" + html_escape(it->first) + "\">" + html_escape(it->first) + ": " +
             std::to_string(it->second) + "</span>";
  out += "<span data-total=\"credits\">spent " + credits_text(spent_micro_) + " credits" +
         (b.budget_credits ? " of a " + credits_text(to_micro(*b.budget_credits)) + " budget" : std::string()) +
         "</span>";
  out += "<span>render time " + seconds_text(render_seconds_) + "</span>";
  out += "<span>" + std::string(b.finished ? "finished " + time_text(b.finished_ms) : "running") + "</span>";
  out += "<span>manifest " + html_escape(b.manifest_name) + "</span>";
  out += "<span>written " + html_escape(time_text(ctx.now_ms)) + "</span></div>\n";
  out += "<div class=\"filters\"><button type=\"button\" data-filter=\"ALL\" aria-pressed=\"true\">all</button>";
  for (ShotState st : all_states())
    if (states_.count(to_string(st)))
      out += "<button type=\"button\" data-filter=\"" + std::string(to_string(st)) + "\" aria-pressed=\"false\">" +
             to_string(st) + "</button>";
  out += "</div>\n<p><a href=\"../index.html\">all batches</a> &middot; <a href=\"report.json\">report.json</a></p>"
         "</header>\n<main>\n";
  std::vector<std::string> page;
  page.push_back(std::move(out));
  page.push_back(std::move(cards_));
  page.push_back("</main>\n<script>" + std::string(kScript) + "</script>\n</body></html>\n");
  return page;
}

std::string batch_sheet_html(const BatchRecord& b, const std::vector<Shot>& shots, const SheetContext& ctx) {
  BatchSheet sheet;
  for (const auto& s : shots) sheet.add(s, ctx);
  std::string out;
  for (const auto& piece : std::move(sheet).pieces(b, ctx)) out += piece;
  return out;
}

std::string batches_index_html(std::vector<BatchLine> batches, int64_t now_ms) {
  std::sort(batches.begin(), batches.end(), [](const BatchLine& a, const BatchLine& b) {
    return a.batch.created_ms != b.batch.created_ms ? a.batch.created_ms > b.batch.created_ms
                                                    : a.batch.name < b.batch.name;
  });
  std::string out = head("wanbatch batches", false);
  out += "<body>\n<header><h1>Batches</h1><div class=\"totals\"><span>written " + html_escape(time_text(now_ms)) +
         "</span></div></header>\n<table>\n<tr><th>batch</th><th>accepted</th><th>state</th><th>shots</th>"
         "<th>credits spent</th></tr>\n";
  for (const auto& l : batches) {
    std::string states;
    for (const auto& [name, n] : l.states) states += (states.empty() ? "" : ", ") + name + " " + std::to_string(n);
    out += "<tr data-batch=\"" + html_escape(l.batch.name) + "\"><td><a href=\"" + html_escape(l.batch.name) +
           "/index.html\">" + html_escape(l.batch.name) + "</a></td><td>" + html_escape(time_text(l.batch.created_ms)) +
           "</td><td>" + (l.batch.finished ? "finished" : "running") + "</td><td>" + html_escape(states) +
           "</td><td>" + credits_text(l.spent_micro) + "</td></tr>\n";
  }
  out += "</table>\n</body></html>\n";
  return out;
}

}  // namespace wb
