"""Compatibility packages for code written for the systems flowplex replaces.

Each subpackage keeps an original system's module paths and signatures as thin adapters over
flowplex, so that existing code runs after changing its imports. ``import flowplex`` imports
none of them. How to move from each one to flowplex's own API: ``docs/migrating.md``.
"""
