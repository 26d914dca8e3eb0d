"""Tests of the TrainDeploy API itself: the CRD's schema, CEL rules, defaults and kubectl views."""
