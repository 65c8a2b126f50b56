"""Backends make pixels; they plug in through one small Protocol."""
