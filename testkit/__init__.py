"""What the tests and the benchmarks share: real servers to point rlchat at
(llama-server, `transformers serve`, a server that misbehaves on request)
and the crash driver.  Installed as `rlchat.testkit`, so both import it by
name from anywhere; nothing of the product (tui/, learner/, storage/)
imports it (tests/test_cli.py holds that)."""
