// Real nats-server processes for tests of the JetStream event log: one server, or a cluster of
// three, on ephemeral loopback ports, with JetStream storing in a temporary directory. A server
// can be killed (SIGKILL) and restarted on the same ports and store.
#ifndef PIMGATE_TESTS_TESTING_NATS_CLUSTER_H_
#define PIMGATE_TESTS_TESTING_NATS_CLUSTER_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace pimgate::testing {

class TempDir;

class NatsCluster {
 public:
  struct Options {
    int servers = 1;  // 1, or 3 for a cluster
    // The servers' max_payload (0: nats-server's default, 1 MiB). Small values make records
    // chunked without megabytes of test data.
    int64_t max_payload = 0;
    // When set, the servers accept only this user and password.
    std::string user;
    std::string password;
    // When set, the servers accept TLS clients only, with this certificate and key.
    std::string tls_cert_file;
    std::string tls_key_file;
  };

  // Starts the servers and waits (with a hang guard) until JetStream answers: for a cluster,
  // until it has a meta leader. started() is false when that did not happen.
  explicit NatsCluster(Options options);
  ~NatsCluster();  // kills every server and removes the store directories

  NatsCluster(const NatsCluster&) = delete;
  NatsCluster& operator=(const NatsCluster&) = delete;

  bool started() const { return started_; }
  // nats:// URLs of every server.
  std::vector<std::string> urls() const;
  // store.jetstream for these servers: replicas = the number of servers, the given stream.
  JetStreamConfig Config(const std::string& stream = "PIMGATE_LOG") const;

  void Kill(int server);     // SIGKILL and reap
  void Restart(int server);  // after Kill: same ports, same store directory
  // Waits (up to `seconds`) until JetStream answers API requests through server `server`.
  bool WaitForJetStream(int server, int seconds = 60) const;
  // The first sequence still in `stream` (0 when it cannot be read): what retention purged.
  uint64_t FirstSequence(const std::string& stream) const;
  // The index of the server that leads `stream` now (-1 when no server says): the one whose
  // death forces an election.
  int StreamLeader(const std::string& stream) const;
  // The server's log (its stderr and stdout), for failure messages.
  std::string Log(int server) const;

 private:
  struct Server {
    std::string name;
    int client_port = 0;
    int cluster_port = 0;
    std::string config_file;
    std::string log_file;
    std::string store_dir;
    pid_t pid = -1;
  };
  // One attempt at starting every server (files named for the attempt); sets started_. Returns
  // whether it failed because a port was taken meanwhile (worth another attempt).
  bool StartAll(int attempt);
  void Start(Server& server);
  // Whether the server's process has ended (reaped then).
  static bool Exited(Server& server);

  std::string ProbeUrl(int server) const;  // with the credentials, for the helper's own checks

  Options options_;
  std::unique_ptr<TempDir> dir_;
  std::vector<Server> servers_;
  bool started_ = false;
  std::string failed_log_;  // the log of the server that did not start
};

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_NATS_CLUSTER_H_
