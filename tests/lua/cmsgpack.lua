-- cmsgpack for fakeredis, which has none; Redis's scripts have it built in. It reads
-- what Columns.packed writes, one MessagePack array of raw strings, and nothing else.
-- Integration tests run the ingest script on a real redis-server and its cmsgpack.
local cmsgpack = {}

-- The unsigned big-endian integer of `size` bytes at `at`.
local function be(data, at, size)
  local value = 0
  for i = at, at + size - 1 do value = value * 256 + string.byte(data, i) end
  return value
end

function cmsgpack.unpack(data)
  local tag, at, count = string.byte(data, 1), 2, nil
  if tag >= 0x90 and tag <= 0x9f then count = tag - 0x90
  elseif tag == 0xdc then count, at = be(data, 2, 2), 4
  elseif tag == 0xdd then count, at = be(data, 2, 4), 6
  else error('cmsgpack for tests: not an array') end
  local values = {}
  for i = 1, count do
    local size
    tag = string.byte(data, at)
    if tag >= 0xa0 and tag <= 0xbf then size, at = tag - 0xa0, at + 1
    elseif tag == 0xda then size, at = be(data, at + 1, 2), at + 3
    elseif tag == 0xdb then size, at = be(data, at + 1, 4), at + 5
    else error('cmsgpack for tests: not a raw string') end
    values[i] = string.sub(data, at, at + size - 1)
    at = at + size
  end
  return values
end

return cmsgpack
