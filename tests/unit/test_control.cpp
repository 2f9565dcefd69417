// The control socket served without the daemon: clients that say nothing, say
// too much or read nothing never hold up the one that asks properly.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "daemon/control.h"
#include "tests/support.h"

using namespace wb;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string socket_path() { return control_socket_path(test::cwd()); }

// A connected client socket (blocking, as `wanbatch pause` uses).
int connect_client(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

void send_text(int fd, const std::string& text) {
  REQUIRE(::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
}

// Everything the server wrote until it closed the connection, waiting at most
// `timeout` for that; `closed` tells whether the end was seen.
std::string read_to_end(int fd, bool& closed, Millis timeout = Millis(1000)) {
  std::string out;
  closed = false;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return out;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) {
      closed = true;
      return out;
    }
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
}

json answer_of(int fd) {
  bool closed = false;
  std::string text = read_to_end(fd, closed);
  CHECK(closed);
  auto j = json::parse(text, nullptr, false);
  REQUIRE_MESSAGE(!j.is_discarded(), text);
  return j;
}

// Nothing the server has to say yet, and the connection still open.
bool open_and_quiet(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

json echo(const json& request) { return {{"ok", true}, {"echo", request}}; }

}  // namespace

TEST_CASE("twenty silent clients do not delay the answer to a real one") {
  ControlServer server(socket_path());
  std::vector<int> silent;
  auto slowest = Millis(0);
  auto timed_serve = [&] {
    auto t = Clock::now();
    server.serve(echo);
    slowest = std::max(slowest, std::chrono::duration_cast<Millis>(Clock::now() - t));
  };
  auto start = Clock::now();
  for (int round = 0; round < 2; ++round) {  // two rounds, within the listen backlog
    for (int i = 0; i < 10; ++i) silent.push_back(connect_client(socket_path()));
    timed_serve();  // accepts the silent ones, which have nothing to read
  }
  int real = connect_client(socket_path());
  send_text(real, R"({"command":"ping"})" "\n");
  timed_serve();
  json a = answer_of(real);
  CHECK(a["ok"] == true);
  CHECK(a["echo"]["command"] == "ping");
  timed_serve();
  CHECK(slowest < Millis(100));
  CHECK(Clock::now() - start < Millis(1000));
  for (int fd : silent) {
    CHECK(open_and_quiet(fd));  // not yet past their deadline
    ::close(fd);
  }
  ::close(real);
}

TEST_CASE("a client without a full request line in time is closed, and the loop is told when") {
  ControlLimits limits;
  limits.request_timeout = Millis(2000);
  ControlServer server(socket_path(), limits);
  CHECK(server.until_next_deadline(Clock::now()) == Millis::max());
  auto t0 = Clock::now();
  int silent = connect_client(socket_path());
  int partial = connect_client(socket_path());
  send_text(partial, R"({"command":)");
  server.serve(t0, echo);
  REQUIRE(server.clients() == 2);
  CHECK(server.until_next_deadline(t0) == Millis(2000));
  CHECK(server.until_next_deadline(t0 + Millis(1500)) == Millis(500));
  auto waits = server.waits();
  REQUIRE(waits.size() == 3);  // the listening socket and each client, all for reading
  for (const auto& w : waits) CHECK(w.events == POLLIN);

  server.serve(t0 + Millis(1999), echo);
  CHECK(server.clients() == 2);
  CHECK(open_and_quiet(silent));
  server.serve(t0 + Millis(2000), echo);
  CHECK(server.clients() == 0);
  CHECK(server.until_next_deadline(t0 + Millis(2000)) == Millis::max());
  for (int fd : {silent, partial}) {
    json a = answer_of(fd);
    CHECK(a["ok"] == false);
    CHECK(a["error"].get<std::string>().find("no request line within 2000 ms") != std::string::npos);
    ::close(fd);
  }
}

TEST_CASE("beyond the client cap a new client is refused at once, and a freed slot is used again") {
  ControlLimits limits;
  limits.max_clients = 4;
  ControlServer server(socket_path(), limits);
  std::vector<int> silent;
  for (int i = 0; i < 4; ++i) silent.push_back(connect_client(socket_path()));
  server.serve(echo);
  REQUIRE(server.clients() == 4);

  int extra = connect_client(socket_path());
  server.serve(echo);
  json refused = answer_of(extra);
  CHECK(refused["ok"] == false);
  CHECK(refused["error"].get<std::string>().find("too many control clients") != std::string::npos);
  CHECK(server.clients() == 4);
  pollfd listening = server.waits().front();
  CHECK(::poll(&listening, 1, 0) == 0);  // nothing left waiting to keep the loop spinning

  ::close(silent.back());
  silent.pop_back();
  int real = connect_client(socket_path());
  send_text(real, R"({"command":"pause"})" "\n");
  server.serve(echo);  // the closed one goes, the new one takes its slot and is answered
  CHECK(answer_of(real)["echo"]["command"] == "pause");
  CHECK(server.clients() == 3);
  for (int fd : silent) ::close(fd);
  ::close(extra);
  ::close(real);
}

TEST_CASE("a request line over the cap gets an error, one under it an answer") {
  ControlServer server(socket_path());
  int huge = connect_client(socket_path());
  send_text(huge, std::string(70 * 1024, 'x'));  // no newline: would never end
  server.serve(echo);
  json a = answer_of(huge);
  CHECK(a["ok"] == false);
  CHECK(a["error"] == "the request line is over 65536 bytes");
  CHECK(server.clients() == 0);

  int big = connect_client(socket_path());
  send_text(big, json{{"command", "ping"}, {"pad", std::string(60 * 1024, 'y')}}.dump() + "\n");
  server.serve(echo);
  CHECK(answer_of(big)["echo"]["command"] == "ping");
  ::close(huge);
  ::close(big);
}

TEST_CASE("an answer the client does not read is dropped after its deadline, without waiting for it") {
  ControlLimits limits;
  limits.answer_timeout = Millis(2000);
  ControlServer server(socket_path(), limits);
  auto big_answer = [](const json&) { return json{{"ok", true}, {"blob", std::string(8 << 20, 'z')}}; };
  int reader = connect_client(socket_path());
  send_text(reader, R"({"command":"status"})" "\n");
  auto t0 = Clock::now();
  server.serve(t0, big_answer);
  CHECK(Clock::now() - t0 < Millis(500));  // wrote what the socket took, then went on
  REQUIRE(server.clients() == 1);
  auto waits = server.waits();
  REQUIRE(waits.size() == 2);
  CHECK(waits[1].events == POLLOUT);
  CHECK(server.until_next_deadline(t0) == Millis(2000));
  server.serve(t0 + Millis(2000), big_answer);
  CHECK(server.clients() == 0);
  bool closed = false;
  std::string got = read_to_end(reader, closed, Millis(5000));
  CHECK(closed);
  CHECK(got.size() < (8u << 20));  // cut short
  ::close(reader);
}

TEST_CASE("a malformed request or one the handler cannot take gets an error answer") {
  ControlServer server(socket_path());
  auto strict = [](const json& r) { return json{{"ok", true}, {"command", r.value("command", "")}}; };
  int wrong_type = connect_client(socket_path());
  send_text(wrong_type, R"({"command":5})" "\n");
  int not_json = connect_client(socket_path());
  send_text(not_json, "pause\n");
  int unterminated = connect_client(socket_path());
  send_text(unterminated, R"({"command":"resume"})");
  ::shutdown(unterminated, SHUT_WR);  // the end of the stream ends the line
  int empty = connect_client(socket_path());
  ::shutdown(empty, SHUT_WR);
  server.serve(strict);

  json a = answer_of(wrong_type);
  CHECK(a["ok"] == false);
  CHECK(a["error"].get<std::string>().rfind("bad request: ", 0) == 0);
  CHECK(answer_of(not_json)["error"] == "the request must be one JSON object");
  CHECK(answer_of(unterminated)["command"] == "resume");
  bool closed = false;
  CHECK(read_to_end(empty, closed).empty());
  CHECK(closed);
  CHECK(server.clients() == 0);
  for (int fd : {wrong_type, not_json, unterminated, empty}) ::close(fd);
}

TEST_CASE("control_request talks to a server served from another thread") {
  ControlServer server(socket_path());
  std::atomic<bool> done{false};
  std::thread loop([&] {
    while (!done) {
      auto waits = server.waits();
      ::poll(waits.data(), waits.size(), 50);
      server.serve(echo);
    }
  });
  json a = control_request(test::cwd(), {{"command", "ping"}});
  done = true;
  loop.join();
  CHECK(a["echo"]["command"] == "ping");
}
