"""Consented frame collector: hard examples kept on the box for training a deployment's own model.

Off unless a camera enables it (`cameras[].collect`, with the consent on record). It keeps frames
where the detector nearly missed a person (`picks.low_score_persons`), where a rule almost fired
(`picks.NearMissWatch`) and alerts an operator marked as false alarm (`store.ExampleStore.mark`),
with heads obscured before anything is written (`privacy`), under a disk quota; `export` writes
them as COCO JSON or YOLO txt for Label Studio / CVAT with the licence and consent note.
The agent's wiring is `edge_agent/app/collect_wiring.py`; docs/models.md tells the whole loop.
"""
