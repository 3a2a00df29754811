"""hpcm.train"""
