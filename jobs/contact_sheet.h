// The contact sheet: <output_root>/<batch>/index.html, one card per shot
// (poster, the video inline, prompt, seed, resolution, duration, cost, render
// time, take, state; for a FAILED, REJECTED or HELD shot the reason and the
// command that retries it), batch totals at the top and a filter by state;
// and <output_root>/index.html, every batch newest first. Pure functions of
// the records: the daemon's sink (daemon/contact_sheets.h) writes them.
//
// Self-contained: inline CSS and JS (allowed by their hashes in a
// Content-Security-Policy that lets nothing else load but the batch folder's
// own files), relative links only, so it works from file:// and any static
// server. Every piece of user text is HTML-escaped.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "jobs/shot.h"
#include "jobs/store.h"

namespace wb {

std::string html_escape(const std::string& text);

struct SheetContext {
  int64_t now_ms = 0;  // "written at"
  // Shots (by id) whose poster <id>.jpg exists beside the video.
  std::set<std::string> posters;
  // By shot id: the exact command that retries it (a FAILED, REJECTED or HELD shot).
  std::map<std::string, std::string> retry_commands;
};

std::string batch_sheet_html(const BatchRecord& batch, const std::vector<Shot>& shots, const SheetContext& context);

// One shot's card on the page, and what the batch's totals take from it.
struct SheetCard {
  std::string state;
  int64_t spent_micro = 0;  // its cost and its earlier takes' (revisions)
  std::optional<double> render_seconds;  // submit to COMPLETED, when both are known
  std::string html;
};
SheetCard sheet_card(const Shot& shot, const SheetContext& context);

// The same page a shot at a time, so that a big batch's records need not all be in
// memory at once: add() each shot in order (its card is kept, its record is not),
// then pieces() gives the page (head with the totals, the cards, the tail).
class BatchSheet {
 public:
  void add(const Shot& shot, const SheetContext& context) { add(sheet_card(shot, context)); }
  // A card made earlier (sheet_card) of a shot whose record has not changed since.
  void add(const SheetCard& card);
  std::vector<std::string> pieces(const BatchRecord& batch, const SheetContext& context) &&;

 private:
  std::map<std::string, int> states_;
  size_t shots_ = 0;
  int64_t spent_micro_ = 0;
  double render_seconds_ = 0;
  std::string cards_;
};

struct BatchLine {
  BatchRecord batch;
  std::map<std::string, int> states;
  int64_t spent_micro = 0;
};
// Every batch, newest (created) first.
std::string batches_index_html(std::vector<BatchLine> batches, int64_t now_ms);

}  // namespace wb
