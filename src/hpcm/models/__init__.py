"""hpcm.models"""
