// The submit journal: an append-only file beside the state store with a copy of
// every ledger entry (each POST attempt and its outcome, and every operator
// decision that releases a shot). Each line carries its own checksum and is
// fsynced before the store is written, so the two records fail independently:
// a store whose write-ahead log lost synced writes is checked against the
// journal at start (Store::open), and any submit the store forgot is restored
// or HELD, never sent again. docs/RELIABILITY.md, "A damaged state store".
//
// Line format: <16 hex digits: SHA-256 prefix of the JSON> <JSON>\n
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace wb {

class SubmitJournal {
 public:
  struct Contents {
    std::vector<nlohmann::json> entries;  // the readable lines, in order
    int damaged_lines = 0;   // unreadable lines followed by readable ones: real damage
    bool torn_tail = false;  // an unreadable last line: an append that never completed
  };
  // Reads the journal at `path` (a missing file is empty). Throws wb::Error when
  // it cannot be read.
  static Contents read(const std::string& path);

  // Opens `path` for appending (created 0600). Throws wb::Error.
  explicit SubmitJournal(std::string path);
  ~SubmitJournal();
  SubmitJournal(const SubmitJournal&) = delete;
  SubmitJournal& operator=(const SubmitJournal&) = delete;

  // Appends one entry and fsyncs it. Throws wb::Error (disk full, I/O error).
  void append(const nlohmann::json& entry);
  // Replaces the whole journal with `entries`, atomically, and appends from there on.
  void rewrite(const std::vector<nlohmann::json>& entries);

  const std::string& path() const { return path_; }

 private:
  void open_for_append();
  std::string path_;
  int fd_ = -1;
};

}  // namespace wb
