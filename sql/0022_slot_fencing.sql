-- 0022_slot_fencing.sql — fencing epochs: a node that lost a slot commits nothing for it any more.
--
-- Several nodes share the tenants through slot leases in Redis (shards/cluster). A lease carries an epoch that only
-- grows; the node that takes a slot raises the slot's row here to its epoch (sb_fence_bump) before it activates the
-- slot's actors, and every transaction that holds an actor's write ends with sb_fence over the slots it wrote for,
-- with the epochs the writer believed it held. A writer whose epoch is older than the row's is refused (SQLSTATE
-- SBF01) and its whole transaction rolls back, so a node that was paused (SIGSTOP, a long GC-like stall, a network
-- partition) past its lease leaves no trace when it wakes.
--
-- The race between a write and the bump is closed by a lock per slot, taken shared by writers and exclusive by the
-- bump, both until commit (transaction-scoped advisory locks: no row is written, no WAL): a bump waits for the
-- writes of the old epoch that were already checked to commit (they were legitimate: the new owner loads them),
-- and a write checked after the bump committed sees the new epoch. Both take their locks in slot order, so a write
-- of several slots and a bump of several never wait for each other in a cycle.
CREATE TABLE slot_epochs (
    slot  integer PRIMARY KEY,
    epoch bigint  NOT NULL
);

-- Refuses the transaction unless every slots[i] is still at most at epochs[i]. Returns the number of slots checked.
CREATE FUNCTION sb_fence(slots integer[], epochs bigint[]) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN SELECT s, e FROM unnest(slots, epochs) AS u(s, e) ORDER BY s LOOP
        PERFORM pg_advisory_xact_lock_shared(1397703750, r.s);
        IF EXISTS (SELECT 1 FROM slot_epochs WHERE slot = r.s AND epoch > r.e) THEN
            RAISE EXCEPTION 'slot % was taken over by a newer owner: this node''s writes for it are refused', r.s
                USING ERRCODE = 'SBF01';
        END IF;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Raises each slots[i] to epochs[i] (never lowers one). Returns the slots that already had a newer epoch: someone
-- else owns them now, and the caller must let them go.
CREATE FUNCTION sb_fence_bump(slots integer[], epochs bigint[]) RETURNS integer[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r record;
    stale integer[] := '{}';
    cur bigint;
BEGIN
    FOR r IN SELECT s, e FROM unnest(slots, epochs) AS u(s, e) ORDER BY s LOOP
        PERFORM pg_advisory_xact_lock(1397703750, r.s);
        INSERT INTO slot_epochs AS x (slot, epoch) VALUES (r.s, r.e)
            ON CONFLICT (slot) DO UPDATE SET epoch = greatest(x.epoch, excluded.epoch)
            RETURNING x.epoch INTO cur;
        IF cur > r.e THEN
            stale := stale || r.s;
        END IF;
    END LOOP;
    RETURN stale;
END
$$;
