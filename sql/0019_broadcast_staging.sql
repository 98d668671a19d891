-- 0019_broadcast_staging.sql — a broadcast's recipients are staged with the broadcast's row, then expanded into messages.
--
-- A broadcast of 100,000 recipients is answered 202 once its row holds every recipient (rendered: the address, the
-- body and the template each recipient's message will have), one statement; its channel's session then expands them
-- into messages a batch at a time (adapters/store/broadcasts.c), each batch moving `expanded` on in the same statement,
-- so a stop in between resumes where it was. The staged arrays go (NULL) once the broadcast is whole (status active).
-- STORAGE EXTERNAL: megabytes of text written once and sliced by every batch, never compressed (the CPU it would cost
-- is the accept's, and a slice of a compressed value decompresses the whole of it).
ALTER TABLE broadcasts
    ADD COLUMN pending_to        text[],
    ADD COLUMN pending_body      text[],
    ADD COLUMN pending_template  text[],
    ADD COLUMN expanded          integer NOT NULL DEFAULT 0;
ALTER TABLE broadcasts ALTER COLUMN pending_to SET STORAGE EXTERNAL,
                       ALTER COLUMN pending_body SET STORAGE EXTERNAL,
                       ALTER COLUMN pending_template SET STORAGE EXTERNAL;
-- The broadcasts a session resumes at activation: those of its channel still being expanded.
CREATE INDEX broadcasts_accepting ON broadcasts (tenant_id, channel_id) WHERE status = 'accepting';
