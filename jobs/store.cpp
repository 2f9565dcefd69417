#include "jobs/store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "jobs/credits.h"
#include "jobs/journal.h"
#include "jobs/json_safe.h"
#include "jobs/throttle.h"
#include "jobs/util.h"

namespace wb {

namespace {

std::string shot_key(const std::string& batch, const std::string& id) {
  return "s/" + batch + "/" + id;
}

nlohmann::json batch_json(const BatchRecord& b) {
  nlohmann::json j = {{"name", b.name},         {"priority", b.priority},       {"manifest_name", b.manifest_name},
          {"manifest_path", b.manifest_path}, {"sha256", b.sha256}, {"base_dir", b.base_dir},
          {"created_ms", b.created_ms}, {"shot_count", b.shot_count}, {"finished", b.finished},
          {"finished_ms", b.finished_ms},
          {"budget_credits", b.budget_credits ? nlohmann::json(*b.budget_credits) : nlohmann::json(nullptr)}};
  if (b.damaged) j["damaged"] = true;
  if (b.revision != 1) j["revision"] = b.revision;
  return j;
}

BatchRecord batch_from(const std::string& text) {
  auto parsed = parse_json_bounded(text);
  if (!parsed || !parsed->is_object()) throw std::runtime_error("not a JSON object");
  const nlohmann::json& j = *parsed;
  BatchRecord b;
  b.name = j.at("name").get<std::string>();
  b.priority = j.value("priority", 0);
  b.manifest_name = j.value("manifest_name", "");
  b.manifest_path = j.value("manifest_path", "");
  b.sha256 = j.value("sha256", "");
  b.base_dir = j.value("base_dir", "");
  b.created_ms = j.value("created_ms", int64_t{0});
  b.shot_count = j.value("shot_count", 0);
  b.finished = j.value("finished", false);
  b.finished_ms = j.value("finished_ms", int64_t{0});
  if (j.contains("budget_credits") && j["budget_credits"].is_number())
    b.budget_credits = j["budget_credits"].get<double>();
  b.damaged = j.value("damaged", false);
  b.revision = std::max(1, j.value("revision", 1));
  return b;
}

// Stand-ins for records that cannot be read: the key names the batch and shot,
// everything else is lost (the raw bytes are kept under q/ by a read_write open).
const char* kUnreadable =
    "unreadable record: its stored bytes are not a valid record (kept under q/ in the state store); "
    "the shot is not followed. Render it again under a new batch name";

Shot shot_stand_in(const std::string& key) {
  // key: s/<batch>/<id>
  Shot s;
  auto slash = key.find('/', 2);
  s.batch = key.substr(2, slash == std::string::npos ? std::string::npos : slash - 2);
  s.spec.id = slash == std::string::npos ? "?" : key.substr(slash + 1);
  s.state = ShotState::held;
  s.reason = kUnreadable;
  s.damaged = true;
  return s;
}

BatchRecord batch_stand_in(const std::string& key) {
  BatchRecord b;
  b.name = key.substr(2);
  b.damaged = true;
  return b;
}

// The record, or nullopt when its bytes are not one.
// A record read under `key` (when given) must be the shot or batch its key names,
// and a shot must hold what every manifest shot has (a prompt, an image): a record
// that parses but says otherwise was damaged or edited, and is not trusted (it
// would be followed, billed or reported as something nobody asked for).
std::optional<Shot> parse_shot(const std::string& value, const std::string& key = "") {
  try {
    Shot s = shot_from_json(value);
    if (!key.empty() && shot_key(s.batch, s.spec.id) != key) return std::nullopt;
    if (s.spec.prompt.empty() || s.spec.image.empty()) return std::nullopt;
    return s;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::optional<BatchRecord> parse_batch(const std::string& value, const std::string& key = "") {
  try {
    BatchRecord b = batch_from(value);
    if (!key.empty() && "b/" + b.name != key) return std::nullopt;
    return b;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

Shot read_shot(const std::string& key, const std::string& value) {
  return parse_shot(value, key).value_or(shot_stand_in(key));
}

BatchRecord read_batch(const std::string& key, const std::string& value) {
  return parse_batch(value, key).value_or(batch_stand_in(key));
}

void check(const rocksdb::Status& s, const std::string& what) {
  if (!s.ok()) throw Error("state store: " + what + ": " + s.ToString());
}

}  // namespace

std::unique_ptr<Store> Store::open(const std::string& dir, Mode mode) {
  rocksdb::Options options;
  options.create_if_missing = mode == Mode::read_write;
  // A damaged write-ahead log must never be replayed silently up to the damage
  // (RocksDB's default): the daemon reads it strictly first, and only on
  // corruption recovers to the last consistent point, then checks every submit
  // against the journal (reconcile_with_journal).
  options.wal_recovery_mode = mode == Mode::read_write ? rocksdb::WALRecoveryMode::kAbsoluteConsistency
                                                       : rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  options.keep_log_file_num = 5;
  options.max_log_file_size = 8 << 20;
  // The daemon's data is small; keep memory and file handles modest.
  options.write_buffer_size = 8 << 20;
  options.max_open_files = 256;
  std::unique_ptr<Store> store(new Store());
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = mode == Mode::read_write
                          ? rocksdb::DB::Open(options, dir, &raw)
                          : rocksdb::DB::OpenForReadOnly(options, dir, &raw);
  // A read-only open beside a running daemon can race its flushes and
  // compactions (a table file named in the MANIFEST is deleted meanwhile): try
  // again on a fresh view.
  for (int i = 0; i < 20 && mode == Mode::read_only && (s.IsCorruption() || s.IsIOError()); ++i) {
    ::usleep(50000);
    s = rocksdb::DB::OpenForReadOnly(options, dir, &raw);
  }
  bool damaged = false;
  if (mode == Mode::read_write && s.IsCorruption()) {
    spdlog::error("the state store's write-ahead log is damaged ({}); recovering to its last consistent point "
                  "and checking every submit against the submit journal",
                  s.ToString());
    store->repairs_.push_back("write-ahead log damaged: " + s.ToString());
    damaged = true;
    options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    s = rocksdb::DB::Open(options, dir, &raw);
  }
  if (!s.ok()) {
    if (mode == Mode::read_only && s.IsPathNotFound())
      throw Error("no state in " + dir + " yet (the daemon has not run with this state_dir)");
    throw Error("cannot open the state store in " + dir + ": " + s.ToString());
  }
  store->db_.reset(raw);

  std::string version;
  s = store->db_->Get(rocksdb::ReadOptions(), "meta/schema", &version);
  if (s.IsNotFound()) {
    if (mode == Mode::read_write)
      store->write({{"meta/schema", std::to_string(kSchemaVersion)}}, Sync::yes);
  } else {
    check(s, "reading the schema version");
    if (version != std::to_string(kSchemaVersion))
      throw Error("the state in " + dir + " has schema version " + version + "; this wanbatch reads " +
                  std::to_string(kSchemaVersion));
  }
  std::unique_ptr<rocksdb::Iterator> it(store->db_->NewIterator(rocksdb::ReadOptions()));
  it->SeekForPrev("l/~");
  if (it->Valid() && it->key().starts_with("l/")) {
    try {
      store->ledger_seq_ = std::stoull(it->key().ToString().substr(2));
    } catch (const std::exception&) {
      throw Error("the state in " + dir + " has an unreadable ledger key " + it->key().ToString());
    }
  }
  it.reset();
  if (mode == Mode::read_write) {
    // A store from before the indexes, or one that was damaged, is read whole
    // once: every record checked, the indexes and aggregates built again.
    const bool indexed = store->meta("index_version").value_or("") == "1";
    store->set_aside_unreadable(!indexed || damaged);
    const std::string journal_path = join_path(dirname_of(dir), "submits.journal");
    // Read before it is opened for appending, which ends a torn last line.
    SubmitJournal::Contents journal = SubmitJournal::read(journal_path);
    store->journal_ = std::make_unique<SubmitJournal>(journal_path);
    store->reconcile_with_journal(damaged, journal);
    if (!indexed || !store->repairs_.empty()) store->build_indexes();
  }
  return store;
}

void Store::put_raw(const std::vector<std::pair<std::string, std::string>>& puts) { write(puts, Sync::yes); }

void Store::set_aside_unreadable(bool all) {
  std::vector<std::pair<std::string, std::string>> puts;
  const std::string stamp = std::to_string(to_epoch_ms(std::chrono::system_clock::now()));
  auto consider = [&](const std::string& key, const std::string& value) {
    bool shots = key[0] == 's';
    if (shots ? parse_shot(value, key).has_value() : parse_batch(value, key).has_value()) return;
    spdlog::error("state store: record {} is unreadable; set aside (raw bytes kept under q/{}@{}), {}", key, key,
                  stamp, shots ? "the shot is HELD" : "the batch goes on with a stand-in record");
    repairs_.push_back("unreadable record " + key);
    puts.emplace_back("q/" + key + "@" + stamp, value);
    puts.emplace_back(key, shots ? shot_to_json(shot_stand_in(key)) : batch_json(batch_stand_in(key)).dump());
  };
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  if (all) {
    for (const char* prefix : {"b/", "s/"}) {
      for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
        consider(it->key().ToString(), it->value().ToString());
      check(it->status(), std::string("scan ") + prefix);
    }
  } else {
    // Finished records are not read at start (a garbled one reads as a stand-in
    // when `status` shows it); unfinished ones are, through their index.
    for (const auto& [index, record] : {std::pair<const char*, const char*>{"ub/", "b/"}, {"u/", "s/"}}) {
      for (it->Seek(index); it->Valid() && it->key().starts_with(index); it->Next()) {
        std::string key = record + it->key().ToString().substr(std::string(index).size()), value;
        auto st = db_->Get(rocksdb::ReadOptions(), key, &value);
        if (st.ok()) consider(key, value);
      }
      check(it->status(), std::string("scan ") + index);
    }
  }
  if (!puts.empty()) put_raw(puts);
}

void Store::build_indexes() {
  // One pass over every record of a store from before the indexes. write()
  // keeps u/ and ub/ from here on; d/ and the cost model are summed once.
  std::map<std::string, int64_t> days;
  nlohmann::json costs = nlohmann::json::object();
  rocksdb::WriteBatch batch;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("s/"); it->Valid() && it->key().starts_with("s/"); it->Next()) {
    auto shot = parse_shot(it->value().ToString());
    if (!shot || !is_terminal(shot->state)) batch.Put("u/" + it->key().ToString().substr(2), "");
    if (!shot || !shot->cost) continue;
    int64_t micro = std::llround(*shot->cost * 1e6);
    if (shot->completed_ms) days[local_day(from_epoch_ms(shot->completed_ms))] += micro;
    if (shot->spec.duration > 0 && *shot->cost >= 0) {
      auto& c = costs[shot->spec.resolution];
      if (!c.is_object()) c = {{"micro", int64_t{0}}, {"seconds", int64_t{0}}};
      c["micro"] = c["micro"].get<int64_t>() + micro;
      c["seconds"] = c["seconds"].get<int64_t>() + shot->spec.duration;
    }
  }
  check(it->status(), "scan s/");
  for (it->Seek("b/"); it->Valid() && it->key().starts_with("b/"); it->Next()) {
    auto b = parse_batch(it->value().ToString());
    if (!b || !b->finished) batch.Put("ub/" + it->key().ToString().substr(2), "");
  }
  check(it->status(), "scan b/");
  for (const auto& [day, micro] : days) batch.Put("d/" + day, std::to_string(micro));
  batch.Put("meta/cost_model", costs.dump());
  batch.Put("meta/index_version", "1");
  rocksdb::WriteOptions wo;
  wo.sync = true;
  check(db_->Write(wo, &batch), "write the indexes");
}

// Implementation note. Every ledger entry reaches the journal (fsynced) before
// the store, so the store can only be behind the journal, never ahead. For each
// shot, the journal's last entry tells what the store must at least show:
//   attempt                 a POST may be on the wire: SUBMITTING or later
//   accepted                the provider has the job: its request_id
//   ambiguous*, duplicate   a job may exist: HELD
//   anything else           no job was started (not_accepted, rejected,
//                           refused) or a person released the shot (retries)
// A store behind that is repaired from the journal: the request_id restored
// (the job is followed, never resubmitted) or the shot HELD. When both records
// are damaged, no PENDING shot can be proven unsent: all of them are HELD.
void Store::reconcile_with_journal(bool store_damaged, const SubmitJournal::Contents& journal) {
  if (journal.damaged_lines > 0) {
    spdlog::error("the submit journal {} has {} damaged line(s)", journal_->path(), journal.damaged_lines);
    repairs_.push_back("submit journal: " + std::to_string(journal.damaged_lines) + " damaged line(s)");
  }
  // Is the journal whole? Its header must be of the generation the store
  // recorded, and it must reach at least as far as the store's own ledger.
  bool incomplete = false;
  if (auto generation = meta("journal_generation")) {
    const nlohmann::json* header =
        journal.entries.empty() || journal.entries.front().value("event", "") != "journal_start"
            ? nullptr
            : &journal.entries.front();
    uint64_t reach = 0;
    for (const auto& e : journal.entries)
      if (e.contains("seq") && e["seq"].is_number_unsigned()) reach = std::max(reach, e["seq"].get<uint64_t>());
    uint64_t expected = std::stoull(*generation);
    uint64_t found = header ? header->value("generation", uint64_t{0}) : 0;
    if (!header || (found != expected && found != expected + 1)) {
      incomplete = true;
      spdlog::error("the submit journal {} is missing, emptied or of another generation (the store expects "
                    "generation {})",
                    journal_->path(), *generation);
    } else if (reach < ledger_seq_) {
      incomplete = true;
      spdlog::error("the submit journal {} ends at ledger entry {}, before the state store's {}: it lost entries",
                    journal_->path(), reach, ledger_seq_);
    }
    if (incomplete) repairs_.push_back("submit journal incomplete");
  }
  std::map<std::string, nlohmann::json> last;  // shot key -> its last entry
  for (const auto& e : journal.entries)
    if (e.contains("shot") && e["shot"].is_string()) last[e["shot"].get<std::string>()] = e;
  const std::string now = iso8601_utc(std::chrono::system_clock::now());
  for (const auto& [key, e] : last) {
    std::string event = e.value("event", "");
    bool on_wire = event == "attempt";
    bool accepted = event == "accepted" || event == "restored_from_journal";
    bool maybe_job = event == "ambiguous" || event == "ambiguous_on_restart" || event == "duplicate_request_id" ||
                     event == "held_unverified";
    if (!on_wire && !accepted && !maybe_job) continue;
    auto slash = key.find('/');
    if (slash == std::string::npos) continue;
    std::string value;
    auto st = db_->Get(rocksdb::ReadOptions(), "s/" + key, &value);
    if (st.IsNotFound()) {
      // The store lost the shot's record itself (its batch was recorded in the
      // damaged region): a HELD stand-in keeps it in sight.
      Shot stand_in = shot_stand_in("s/" + key);
      std::string rid = e.value("request_id", "");
      stand_in.reason = "the state store lost this shot's record; the submit journal shows its last submit step '" +
                        event + "'" + (rid.empty() ? "" : " with request_id " + rid) +
                        ". Check the provider's dashboard; the manifest is in spool.active";
      std::vector<std::pair<std::string, std::string>> puts{{"s/" + key, shot_to_json(stand_in)}};
      std::string ignored;
      if (db_->Get(rocksdb::ReadOptions(), "b/" + stand_in.batch, &ignored).IsNotFound())
        puts.emplace_back("b/" + stand_in.batch, batch_json(batch_stand_in("b/" + stand_in.batch)).dump());
      nlohmann::json entry = {{"time", now}, {"shot", key}, {"event", "held_unverified"}};
      puts.emplace_back(journal_then_key(entry), entry.dump());
      put_raw(puts);
      spdlog::error("{}: {}", key, stand_in.reason);
      repairs_.push_back(key + ": record lost, HELD");
      continue;
    }
    check(st, "read " + key);
    Shot shot = read_shot("s/" + key, value);
    if (shot.damaged) continue;  // already HELD as unreadable
    // An earlier take's last entry: the record has moved on to a later take (a revision).
    if (e.value("take", 1) < shot.take) continue;
    int attempt = e.value("attempt", 0);
    std::string rid = e.value("request_id", "");
    nlohmann::json entry = {{"time", now}, {"shot", key}, {"attempt", attempt}};
    if (accepted) {
      if (shot.request_id == rid) continue;  // the store knows
      if (shot.request_id.empty() && (shot.state == ShotState::pending || shot.state == ShotState::submitting)) {
        shot.state = ShotState::in_flight;
        shot.request_id = rid;
        shot.submit_attempts = std::max(shot.submit_attempts, attempt);
        shot.remote_status = "QUEUED";
        shot.reason = "restored from the submit journal: the state store had lost this submit's request_id";
        entry["event"] = "restored_from_journal";
        entry["request_id"] = rid;
        spdlog::error("{}: the state store had lost request_id {}; restored from the submit journal and followed", key,
                      rid);
      } else {
        shot.state = ShotState::held;
        shot.reason = "the state store and the submit journal disagree on this shot's request_id (store '" +
                      shot.request_id + "', journal '" + rid + "'); check the provider's dashboard";
        entry["event"] = "held_unverified";
        spdlog::error("{}: {}", key, shot.reason);
      }
    } else {
      bool store_knows = on_wire ? (shot.state != ShotState::pending && shot.submit_attempts >= attempt)
                                 : shot.state != ShotState::pending && shot.state != ShotState::submitting;
      if (store_knows) continue;
      shot.state = ShotState::held;
      shot.reason = "ambiguous submit: the state store had lost the record of submit attempt " +
                    std::to_string(attempt) +
                    " (found in the submit journal); the job may exist and be billed. Check the provider's "
                    "dashboard, then `wanbatch retry` it if it was not run";
      entry["event"] = "held_unverified";
      spdlog::error("{}: {}", key, shot.reason);
    }
    repairs_.push_back(key + ": " + entry["event"].get<std::string>());
    std::vector<std::pair<std::string, std::string>> puts;
    puts.emplace_back("s/" + key, shot_to_json(shot));
    if (!shot.request_id.empty() && shot.state == ShotState::in_flight) puts.emplace_back("r/" + shot.request_id, key);
    puts.emplace_back(journal_then_key(entry), entry.dump());
    put_raw(puts);
  }
  // A torn last line is an append cut by a crash before its fsync returned: the
  // store write and the POST that follow it never happened. Damage is a bad line
  // with good ones after it.
  // A journal that is incomplete cannot vouch for the store either: a write-ahead
  // log cut at a record boundary replays cleanly, so "the store looks whole" is
  // no proof. Every shot that cannot be proven unsent is HELD.
  if ((store_damaged && journal.damaged_lines > 0) || incomplete) {
    // Neither record can prove that a PENDING shot was never submitted.
    std::vector<std::pair<std::string, std::string>> puts;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek("s/"); it->Valid() && it->key().starts_with("s/"); it->Next()) {
      Shot shot = read_shot(it->key().ToString(), it->value().ToString());
      if (shot.state != ShotState::pending && shot.state != ShotState::submitting) continue;
      shot.state = ShotState::held;
      shot.reason = "state damaged: the submit journal is damaged or incomplete, so this shot cannot be proven "
                    "unsent. Check the provider's dashboard, then `wanbatch retry --yes` it if it was not run";
      nlohmann::json entry = {{"time", now}, {"shot", shot.key()}, {"event", "held_unverified"},
                              {"attempt", shot.submit_attempts}};
      puts.emplace_back(it->key().ToString(), shot_to_json(shot));
      puts.emplace_back(journal_then_key(entry), entry.dump());
    }
    check(it->status(), "scan s/");
    if (!puts.empty()) {
      spdlog::error("the submit journal cannot vouch for the state store: {} shot(s) that could not be proven "
                    "unsent are HELD",
                    puts.size() / 2);
      repairs_.push_back(std::to_string(puts.size() / 2) + " shot(s) HELD unverified");
      put_raw(puts);
    }
  }
  try {
    compact_journal();
  } catch (const Error& e) {
    // A full state disk: the journal keeps growing until a later compaction.
    spdlog::warn("the submit journal was not compacted: {}", e.what());
  }
}

// Once everything the store holds is in its table files (synced by the flush),
// no damage to the write-ahead log can take it back: the journal starts over.
// The new journal opens with a header naming its generation and the ledger
// sequence it starts after; the store keeps the generation (in its table files,
// by the flush). A journal that is missing, emptied, of another generation, or
// ends before the store's ledger is incomplete (reconcile_with_journal).
void Store::compact_journal() {
  uint64_t generation = std::stoull(meta("journal_generation").value_or("0")) + 1;
  rocksdb::FlushOptions fo;
  fo.wait = true;
  check(db_->Flush(fo), "flush");
  // The journal first, then the store's record of it: a crash between the two
  // leaves a journal one generation ahead, which is whole (the flush was done).
  journal_->rewrite({{{"event", "journal_start"}, {"generation", generation}, {"seq", ledger_seq_}}});
  write({{"meta/journal_generation", std::to_string(generation)}}, Sync::yes);
  journal_entries_ = 0;
}

std::string Store::journal_then_key(const nlohmann::json& entry) {
  // Compact before the append, never after: every earlier entry has reached the store.
  if (journal_ && journal_entries_ >= kJournalCompactEvery) compact_journal();
  std::string key = ledger_key();
  if (journal_) {
    nlohmann::json line = entry;
    line["seq"] = ledger_seq_;
    journal_->append(line);
    ++journal_entries_;
  }
  return key;
}

Store::~Store() = default;

void Store::write(const std::vector<std::pair<std::string, std::string>>& puts, Sync sync, const Shot* shot) {
  rocksdb::WriteBatch batch;
  for (const auto& [k, v] : puts) {
    batch.Put(k, v);
    if (k.starts_with("s/")) {
      // The caller's shot when it passed the one it wrote (no parse), else the record read back.
      bool terminal;
      if (shot && k == shot_key(shot->batch, shot->spec.id)) {
        terminal = is_terminal(shot->state);
      } else {
        auto parsed = parse_shot(v);
        terminal = parsed && is_terminal(parsed->state);
      }
      std::string index = "u/" + k.substr(2);
      if (terminal) batch.Delete(index);
      else batch.Put(index, "");
    } else if (k.starts_with("b/")) {
      auto b = parse_batch(v);
      std::string index = "ub/" + k.substr(2);
      if (b && b->finished) batch.Delete(index);
      else batch.Put(index, "");
    }
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync == Sync::yes;
  commit(wo, batch);
  if (record_written_)
    for (const auto& kv : puts)
      if (kv.first.starts_with("s/") || kv.first.starts_with("b/")) record_written_(kv.first);
}

void Store::commit(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch& batch) {
  rocksdb::Status s = db_->Write(wo, &batch);
  if (!s.ok() && !s.IsCorruption()) {
    // After a failed write (ENOSPC) RocksDB refuses every write until resumed:
    // once the disk has room again, one Resume() and the write goes through.
    if (db_->Resume().ok()) s = db_->Write(wo, &batch);
  }
  check(s, "write");
}

struct ShotCensus::Scan {
  rocksdb::DB* db;
  const rocksdb::Snapshot* snapshot;
  std::unique_ptr<rocksdb::Iterator> it;
  bool shots = false;  // the batch records (b/) are read first, then the shots (s/)
  ~Scan() {
    it.reset();  // before the snapshot it reads
    db->ReleaseSnapshot(snapshot);
  }
};

ShotCensus::ShotCensus(std::unique_ptr<Scan> scan) : scan_(std::move(scan)) {}
ShotCensus::~ShotCensus() = default;

bool ShotCensus::step(size_t records, std::chrono::steady_clock::time_point until) {
  if (done_) return true;
  rocksdb::Iterator& it = *scan_->it;
  constexpr size_t kClockEvery = 16;  // records read between two looks at the clock
  for (size_t n = 0; n < records; ++n) {
    if (n % kClockEvery == kClockEvery - 1 && std::chrono::steady_clock::now() >= until) return false;
    const std::string_view prefix = scan_->shots ? "s/" : "b/";
    if (!it.Valid() || !it.key().starts_with(prefix)) {
      check(it.status(), std::string("census of ") + std::string(prefix));
      if (scan_->shots) {
        done_ = true;
        scan_.reset();  // the snapshot is released as soon as it is read
        return true;
      }
      scan_->shots = true;
      it.Seek("s/");
      continue;
    }
    const std::string key = it.key().ToString();
    if (!scan_->shots) {
      if (auto b = parse_batch(it.value().ToString(), key)) batches_[b->name].record = std::move(*b);
    } else if (auto j = nlohmann::json::parse(it.value().ToString(), nullptr, false);
               j.is_object() && j.contains("state") && j["state"].is_string()) {
      if (auto state = shot_state_from(j["state"].get<std::string>())) {
        ++counts_[*state];
        // "s/<batch>/<id>": neither a batch name nor a shot id holds a '/'.
        const size_t slash = key.find('/', 2);
        if (slash != std::string::npos) {
          if (auto b = batches_.find(key.substr(2, slash - 2)); b != batches_.end()) {
            ++b->second.states[*state];
            if (auto c = j.find("cost"); c != j.end() && c->is_number()) b->second.spent_micro += to_micro(c->get<double>());
            if (auto c = j.find("earlier_cost_micro"); c != j.end() && c->is_number_integer())
              b->second.spent_micro += c->get<int64_t>();  // earlier takes (revisions)
          }
        }
      }
    }
    it.Next();
  }
  return false;
}

std::unique_ptr<ShotCensus> Store::census() const {
  auto scan = std::make_unique<ShotCensus::Scan>();
  scan->db = db_.get();
  scan->snapshot = db_->GetSnapshot();
  rocksdb::ReadOptions options;
  options.snapshot = scan->snapshot;
  options.fill_cache = false;  // a one-off pass over the history
  scan->it.reset(db_->NewIterator(options));
  scan->it->Seek("b/");
  return std::unique_ptr<ShotCensus>(new ShotCensus(std::move(scan)));
}

std::vector<std::string> Store::scan(const std::string& prefix) const {
  std::vector<std::string> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
    out.push_back(it->value().ToString());
  check(it->status(), "scan " + prefix);
  return out;
}

std::string Store::ledger_key() {
  char buf[32];
  std::snprintf(buf, sizeof buf, "l/%020llu", static_cast<unsigned long long>(++ledger_seq_));
  return buf;
}

void Store::add_batch(const BatchRecord& batch, const std::vector<Shot>& shots) {
  std::vector<std::pair<std::string, std::string>> puts;
  puts.reserve(shots.size() + 1);
  puts.emplace_back("b/" + batch.name, batch_json(batch).dump());
  rocksdb::WriteBatch wb;
  for (const auto& [k, v] : puts) wb.Put(k, v);
  wb.Put("ub/" + batch.name, "");
  // Records first, then their index entries: each run is in key order when the
  // shot ids are, which the memtable's insert hint makes cheap.
  for (const auto& s : shots) wb.Put(shot_key(s.batch, s.spec.id), shot_to_json(s));
  for (const auto& s : shots)
    if (!is_terminal(s.state)) wb.Put("u/" + shot_key(s.batch, s.spec.id).substr(2), "");
  rocksdb::WriteOptions wo;
  wo.sync = true;
  wo.memtable_insert_hint_per_batch = true;
  commit(wo, wb);
  if (record_written_) record_written_("b/" + batch.name);  // its shots are all new with it
}

std::optional<std::string> Store::meta(const std::string& name) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), "meta/" + name, &v);
  if (s.IsNotFound()) return std::nullopt;
  check(s, "read meta");
  return v;
}

namespace {
std::string notification_key(uint64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "n/%020llu", static_cast<unsigned long long>(id));
  return buf;
}
}  // namespace

void Store::update_notifications(const std::vector<std::pair<uint64_t, std::string>>& puts,
                                 const std::vector<uint64_t>& erases) {
  rocksdb::WriteBatch batch;
  for (const auto& [id, value] : puts) batch.Put(notification_key(id), value);
  for (uint64_t id : erases) batch.Delete(notification_key(id));
  rocksdb::WriteOptions wo;
  commit(wo, batch);
}

std::vector<std::pair<uint64_t, std::string>> Store::notifications() const {
  std::vector<std::pair<uint64_t, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("n/"); it->Valid() && it->key().starts_with("n/"); it->Next())
    out.emplace_back(std::strtoull(it->key().ToString().c_str() + 2, nullptr, 10), it->value().ToString());
  check(it->status(), "scan n/");
  return out;
}

void Store::put_meta(const std::string& name, const std::string& value) {
  write({{"meta/" + name, value}}, Sync::yes);
}

void Store::put_batch(const BatchRecord& batch) {
  write({{"b/" + batch.name, batch_json(batch).dump()}}, Sync::yes);
}

std::optional<BatchRecord> Store::batch(const std::string& name) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), "b/" + name, &v);
  if (s.IsNotFound()) return std::nullopt;
  check(s, "read batch");
  return read_batch("b/" + name, v);
}

std::vector<BatchRecord> Store::batches() const {
  std::vector<BatchRecord> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("b/"); it->Valid() && it->key().starts_with("b/"); it->Next())
    out.push_back(read_batch(it->key().ToString(), it->value().ToString()));
  check(it->status(), "scan b/");
  return out;
}

void Store::put_shot(const Shot& shot, Sync sync) {
  write({{shot_key(shot.batch, shot.spec.id), shot_to_json(shot)}}, sync, &shot);
}

void Store::put_shot_and_ledger(const Shot& shot, const nlohmann::json& ledger_entry) {
  std::string key = journal_then_key(ledger_entry);
  std::vector<std::pair<std::string, std::string>> puts;
  puts.emplace_back(shot_key(shot.batch, shot.spec.id), shot_to_json(shot));
  if (!shot.request_id.empty()) puts.emplace_back("r/" + shot.request_id, shot.key());
  puts.emplace_back(key, ledger_entry.dump());
  write(puts, Sync::yes, &shot);
}

std::vector<Shot> Store::shots(const std::string& batch) const {
  std::vector<Shot> out;
  each_shot(batch, [&](const Shot& s) { out.push_back(s); });
  return out;
}

void Store::each_shot(const std::string& batch, const std::function<void(const Shot&)>& visit) const {
  const std::string prefix = batch.empty() ? std::string("s/") : "s/" + batch + "/";
  rocksdb::ReadOptions options;
  options.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
    visit(read_shot(it->key().ToString(), it->value().ToString()));
  check(it->status(), "scan " + prefix);
}

std::vector<Shot> Store::all_shots() const { return shots(""); }

std::optional<Shot> Store::shot(const std::string& batch, const std::string& id) const {
  std::string v;
  const std::string key = shot_key(batch, id);
  auto st = db_->Get(rocksdb::ReadOptions(), key, &v);
  if (st.IsNotFound()) return std::nullopt;
  check(st, "read " + key);
  return read_shot(key, v);
}

void Store::put_revision(const BatchRecord& batch, const std::vector<Shot>& shots) {
  std::vector<std::pair<std::string, std::string>> puts;
  puts.reserve(shots.size() + 1);
  puts.emplace_back("b/" + batch.name, batch_json(batch).dump());
  for (const auto& s : shots) puts.emplace_back(shot_key(s.batch, s.spec.id), shot_to_json(s));
  write(puts, Sync::yes);
}

std::vector<BatchRecord> Store::unfinished_batches() const {
  std::vector<BatchRecord> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("ub/"); it->Valid() && it->key().starts_with("ub/"); it->Next())
    if (auto b = batch(it->key().ToString().substr(3)); b && !b->finished) out.push_back(*b);
  check(it->status(), "scan ub/");
  return out;
}

std::vector<Shot> Store::unfinished_shots() const {
  std::vector<Shot> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  std::string value;
  for (it->Seek("u/"); it->Valid() && it->key().starts_with("u/"); it->Next()) {
    std::string key = "s/" + it->key().ToString().substr(2);
    auto s = db_->Get(rocksdb::ReadOptions(), key, &value);
    if (s.IsNotFound()) continue;
    check(s, "read " + key);
    out.push_back(read_shot(key, value));
  }
  check(it->status(), "scan u/");
  return out;
}

void Store::put_shot_spent(const Shot& shot, const std::string& day, int64_t cost_micro,
                           const std::string& cost_model_json) {
  write({{shot_key(shot.batch, shot.spec.id), shot_to_json(shot)},
         {"d/" + day, std::to_string(spent_on(day) + cost_micro)},
         {"meta/cost_model", cost_model_json}},
        Sync::yes, &shot);
}

int64_t Store::spent_on(const std::string& day) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), "d/" + day, &v);
  if (s.IsNotFound()) return 0;
  check(s, "read d/" + day);
  // A garbled aggregate fails closed: the day counts as spent to the limit, so
  // a daily budget holds submits until the next day (logged), never lets more through.
  try {
    size_t used = 0;
    long long micro = std::stoll(v, &used);
    if (used == v.size() && micro >= 0) return micro;
  } catch (const std::exception&) {
  }
  spdlog::error("state store: the spend of {} (d/{}) is unreadable; the day counts as spent to the limit", day, day);
  return kMaxMicroCredits;
}

std::optional<std::string> Store::shot_by_request(const std::string& request_id) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), "r/" + request_id, &v);
  if (s.IsNotFound()) return std::nullopt;
  check(s, "read request index");
  return v;
}

std::optional<std::string> Store::asset_url(const std::string& sha256) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), "a/" + sha256, &v);
  if (s.IsNotFound()) return std::nullopt;
  check(s, "read asset");
  auto j = parse_json_bounded(v);
  if (!j || !j->is_object() || !j->contains("url") || !(*j)["url"].is_string()) return std::nullopt;  // uploaded again
  return (*j)["url"].get<std::string>();
}

void Store::put_asset(const std::string& sha256, const std::string& url) {
  nlohmann::json j = {{"url", url}, {"uploaded_ms", to_epoch_ms(std::chrono::system_clock::now())}};
  write({{"a/" + sha256, j.dump()}}, Sync::no);
}

void Store::append_ledger(const nlohmann::json& entry) {
  write({{journal_then_key(entry), entry.dump()}}, Sync::yes);
}

void Store::ledger_backwards(const std::function<bool(const nlohmann::json&)>& more) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekForPrev("l/\xff"); it->Valid() && it->key().starts_with("l/"); it->Prev()) {
    auto j = parse_json_bounded(it->value().ToString());
    if (!more(j ? *j : nlohmann::json{{"event", "unreadable"}})) break;
  }
  check(it->status(), "ledger backwards");
}

std::vector<nlohmann::json> Store::ledger() const {
  std::vector<nlohmann::json> out;
  for (const auto& v : scan("l/")) {
    auto j = parse_json_bounded(v);
    out.push_back(j ? *j : nlohmann::json{{"event", "unreadable"}, {"bytes", v.size()}});
  }
  return out;
}

}  // namespace wb
