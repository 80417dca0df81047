"""The simulator: log replay and online A/B tests against the streamrank scorer, in a synthetic world.

Modules, one job each:
- `arms`: arms (built-in ranker or scorer model) and the stable hash assignment of users to them;
- `catalog`, `environment`: the synthetic world (items, users, scenarios, click/purchase model);
- `rankers`: the built-in rankers (random, popularity, oracle);
- `client`: a thin gRPC client of the scorer (Retrieve, Rank) with bounded in-flight calls;
- `publish`: simulated requests as events, sent to Kafka or kept in memory;
- `online`: the online A/B loop in the synthetic environment (`run_online`);
- `replay_log`, `replay`: logged interactions and their replay through the scorer (`run_replay`);
- `stats`, `analysis`, `report`: metrics, bootstrap CIs and p-values, and the markdown/HTML/PNG report;
- `ab_check`: the many-seed evidence (oracle beats random, A/A does not differ); `cli`: the command line.
"""
