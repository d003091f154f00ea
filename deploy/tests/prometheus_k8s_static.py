#!/usr/bin/env python3
"""prometheus_k8s_static.py (a step of scripts/test-deploy.sh): Debian's promtool is built
without Kubernetes service discovery (the official image, deploy/k8s/monitoring, has
it): check the in-cluster config with each kubernetes_sd_configs block swapped for a
static target; check_k8s.py checks those blocks' fields itself.
"""
import sys, yaml
conf = yaml.safe_load(open(sys.argv[1]))
conf["rule_files"] = [f"{sys.argv[2]}/{r}" for r in conf.get("rule_files", [])]
for job in conf["scrape_configs"]:
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": ["kubernetes-sd-stand-in:1"]}]
print(yaml.safe_dump(conf, sort_keys=False))
