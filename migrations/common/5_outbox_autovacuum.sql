-- Every outbox row is inserted, claimed and marked published (two updates, so two dead
-- versions per event), and inbox rows come and go by the thousand: vacuum them after a
-- few percent of dead rows rather than the default fifth of the table, so the relay's
-- claim and the pruning read live rows, not a trail of dead ones.
alter table outbox set (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05,
                        autovacuum_vacuum_cost_delay = 0);
alter table inbox set (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05);
