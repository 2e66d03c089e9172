// The medsam2 page: NiiVue shows the scan and the masks; every change goes through the REST API.
// Coordinates: NiiVue gives voxel indices in its RAS-ordered grid; the page turns them into the
// file's own voxel indices (i, j, k) and then into the session's frame (slice, x, y).
import { Niivue, NVImage, DRAG_MODE, SLICE_TYPE } from './niivue.js'
import { StudyImages } from './study_images.js'

const $ = (id) => document.getElementById(id)
const state = {
  key: sessionStorage.getItem('medsam2-key') || '',
  info: null, // GET /api/info
  session: null, // POST /api/sessions answer
  objects: new Map(), // label -> {label, name, summary}
  selected: null,
  tool: 'box',
  busy: false,
  overlay: null,
  labels: null, // the label map shown (native voxel order), what the overlay is made from
  sliceIndex: 0,
  marks: [], // the box prompts drawn since the last propagation: {slice, box}
  markHistory: [], // state.marks before each step the server made (an undo goes back one)
  markFuture: [], // state.marks of the steps undone (a redo goes forward one)
  hidden: new Set(), // labels not shown (display only: they stay in the label map)
}
const nv = new Niivue({ backColor: [0, 0, 0, 1], crosshairWidth: 1, crosshairColor: [1, 1, 0, 0.6], dragAndDropEnabled: false, isColorbar: false })
window.medsam2 = { nv, state } // for tests and the curious (goToSlice is added below)
const study = new StudyImages({ nv, api, headers, status, session: () => state.session, labels: () => state.overlay, colours: () => labelColours() })

// -- the API ---------------------------------------------------------------------------------
function headers(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra
}
let lastActivity = Date.now() // the server closes a session this long after its last request
async function api(method, path, body) {
  lastActivity = Date.now(); $('expiry').hidden = true
  const init = { method, headers: headers() }
  if (body instanceof FormData) init.body = body
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers = headers({ 'Content-Type': 'application/json' }) }
  const response = await fetch(path, init)
  if (response.status === 401) $('keyBox').hidden = false
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`
    try { message = (await response.json()).error || message } catch (e) { /* not JSON */ }
    throw new Error(message)
  }
  return response
}
async function streamLines(response, onLine) {
  const reader = response.body.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  let last = null
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    buffer += decoder.decode(value, { stream: true })
    let cut
    while ((cut = buffer.indexOf('\n')) >= 0) {
      const line = JSON.parse(buffer.slice(0, cut))
      buffer = buffer.slice(cut + 1)
      if (line.error) throw new Error(line.error)
      last = line
      onLine(line)
    }
  }
  return last
}
function status(text, isError = false) {
  $('status').textContent = text
  $('status').className = isError ? 'error' : ''
  if (isError) console.warn('medsam2:', text)
}
async function guarded(work) {
  if (state.busy) { status('busy: wait for the current step to finish'); return }
  state.busy = true
  document.body.dataset.busy = '1'
  try { await work() } catch (error) { status(error.message, true) } finally {
    state.busy = false
    delete document.body.dataset.busy
  }
}

// -- voxel coordinates -----------------------------------------------------------------------
function dims() { const d = nv.volumes[0].hdr.dims; return [d[1], d[2], d[3]] }
function rasToNative(vox) {
  const back = nv.volumes[0]
  const start = back.img2RASstart; const step = back.img2RASstep
  const flat = start[0] + vox[0] * step[0] + start[1] + vox[1] * step[1] + start[2] + vox[2] * step[2]
  const [nx, ny] = dims()
  return [flat % nx, Math.floor(flat / nx) % ny, Math.floor(flat / (nx * ny))]
}
function nativeToRas(ijk) {
  const back = nv.volumes[0]
  const [nx, ny] = dims()
  const strides = [1, nx, nx * ny]
  const ras = [0, 0, 0]
  for (let a = 0; a < 3; a++) {
    const step = back.img2RASstep[a]
    const axis = strides.indexOf(Math.abs(step)) >= 0 ? strides.indexOf(Math.abs(step)) : a
    const base = back.img2RASstart[a] / strides[axis]
    ras[a] = Math.round((ijk[axis] - base) * Math.sign(step || 1))
  }
  return ras
}
function rasIndex(ras) { const d = nv.volumes[0].dimsRAS; return ras[0] + ras[1] * d[1] + ras[2] * d[1] * d[2] } // into nv.drawBitmap
function rasFromIndex(p) { const d = nv.volumes[0].dimsRAS; return [p % d[1], Math.floor(p / d[1]) % d[2], Math.floor(p / (d[1] * d[2]))] }
function toFrame(ijk) { const a = state.session.frame_axes; return { slice: ijk[a.slice], x: ijk[a.x], y: ijk[a.y] } }
function fromFrame(slice, x, y) { const a = state.session.frame_axes; const ijk = [0, 0, 0]; ijk[a.slice] = slice; ijk[a.x] = x; ijk[a.y] = y; return ijk }
function nativeIndex(ijk) { const [nx, ny] = dims(); return ijk[0] + ijk[1] * nx + ijk[2] * nx * ny }
function crosshairNative() { return rasToNative(nv.frac2vox(nv.scene.crosshairPos)) }
function goToSlice(slice) {
  const here = toFrame(crosshairNative())
  const ijk = fromFrame(slice, here.x, here.y)
  nv.scene.crosshairPos = nv.vox2frac(nativeToRas(ijk))
  nv.createOnLocationChange()
  nv.drawScene()
  showLocation()
}
function showLocation(data) {
  if (!state.session) return
  study.follow()
  const frame = toFrame(crosshairNative())
  state.sliceIndex = frame.slice
  let readout = ''
  const values = data && data.values ? data.values : []
  if (values.length) {
    const intensity = values[0].value
    const label = state.labels ? state.labels[nativeIndex(crosshairNative())] : 0
    const name = label && state.objects.has(label) ? state.objects.get(label).name : ''
    readout = `, value ${Number.isInteger(intensity) ? intensity : Number(intensity).toPrecision(4)}, label ${label}${name ? ` (${name})` : ''}`
    document.body.dataset.readout = `${intensity}|${label}`
  }
  $('location').textContent = `slice ${frame.slice} / ${state.session.frames[0] - 1} (${state.session.axis}), x ${frame.x}, y ${frame.y}${readout}`
}
function showWindow() {
  // the display window (what dragging with W/L changes); the data and the model's window stay
  const v = nv.volumes[0]
  if (!v) return
  $('windowReadout').textContent = `W ${(v.cal_max - v.cal_min).toPrecision(4)} L ${((v.cal_max + v.cal_min) / 2).toPrecision(4)}`
  document.body.dataset.window = `${v.cal_min},${v.cal_max}`
}

// -- objects ---------------------------------------------------------------------------------
function colour(label) { const p = state.info.palette; return p[(label - 1) % p.length] }
function selectObject(label) { state.selected = label; renderObjects() }
function addObject(name) {
  let label = 1
  while (state.objects.has(label)) label++
  state.objects.set(label, { label, name: name || `object ${label}`, summary: null, pending: false })
  selectObject(label)
  refreshColours()
  return label
}
function renderObjects() {
  const list = $('objects')
  list.innerHTML = ''
  for (const obj of state.objects.values()) {
    const item = document.createElement('li')
    item.dataset.label = obj.label
    if (obj.label === state.selected) item.className = 'selected'
    const [r, g, b] = colour(obj.label)
    const info = obj.summary ? `${obj.summary.volume_ml ?? obj.summary.area_pixels} ${obj.summary.volume_ml !== null ? 'mL' : 'px'}` : (obj.pending ? 'to propagate' : 'no prompt yet')
    item.innerHTML = `<input type="checkbox" class="shown" title="show or hide (display only)"><span class="swatch" style="background:rgb(${r},${g},${b})"></span><span>${obj.label}</span><span class="name"></span><span class="state">${info}</span><label class="lockbox" title="lock: this object keeps every voxel it shares with another (another's propagation never takes them)"><input type="checkbox" class="lock">lock</label>`
    item.querySelector('.name').textContent = obj.name
    const shown = item.querySelector('.shown')
    shown.checked = !state.hidden.has(obj.label)
    shown.onclick = (event) => { event.stopPropagation(); toggleShown(obj.label, shown.checked) }
    const lock = item.querySelector('.lock')
    lock.checked = Boolean(obj.summary && obj.summary.locked)
    lock.onclick = (event) => { event.stopPropagation(); guarded(() => lockObject(obj, lock.checked)) }
    item.onclick = () => selectObject(obj.label)
    list.appendChild(item)
  }
  renderDetails()
}
function toggleShown(label, shown) {
  if (shown) state.hidden.delete(label); else state.hidden.add(label)
  refreshColours()
  document.body.dataset.hidden = [...state.hidden].sort((a, b) => a - b).join(',')
}
function onServer(obj) { return Boolean(obj.summary || obj.pending) }
async function objectStep(obj, method, action, body) {
  // one step the server makes on an object (an undo step): its answer laid on every view
  const answer = await (await api(method, `/api/sessions/${state.session.session}/objects/${obj.label}${action ? '/' + action : ''}`, body)).json()
  pushHistory()
  await reloadOverlay()
  applySummary(answer)
  return answer
}
function segmentedSelection(hint = 'select a segmented object') {
  const obj = state.objects.get(state.selected)
  if (obj && obj.summary) return obj
  status(hint, true)
  return null
}
async function lockObject(obj, locked) {
  if (!onServer(obj)) { status(`${obj.name}: prompt it first, then lock it`, true); renderObjects(); return }
  const answer = await objectStep(obj, 'PATCH', '', { locked })
  status(`${obj.name} ${locked ? 'locked: it keeps the voxels it shares with others' : 'unlocked'}`)
  document.body.dataset.locked = answer.objects.filter((o) => o.locked).map((o) => o.label).join(',')
}
async function renameObject() {
  const obj = state.objects.get(state.selected)
  const name = $('objectName').value.trim()
  if (!obj || !name) { status('select an object and type its new name', true); return }
  if (onServer(obj)) {
    const answer = await (await api('PATCH', `/api/sessions/${state.session.session}/objects/${obj.label}`, { name })).json()
    pushHistory()
    obj.name = name
    applySummary(answer)
  } else { obj.name = name; renderObjects() }
  refreshColours()
  status(`object ${obj.label} is now ${name}`)
}
async function deleteObject() {
  const obj = state.objects.get(state.selected)
  if (!obj) { status('select the object to delete', true); return }
  if (onServer(obj)) {
    const answer = await (await api('DELETE', `/api/sessions/${state.session.session}/objects/${obj.label}`)).json()
    pushHistory()
    state.objects.delete(obj.label)
    await reloadOverlay()
    applySummary(answer)
  } else state.objects.delete(obj.label)
  state.selected = null
  renderObjects()
  status(`${obj.name} deleted (Undo brings it back)`)
}
function renderDetails() {
  const obj = state.objects.get(state.selected)
  $('objectName').value = obj ? obj.name : ""
  const plot = $('confidencePlot')
  const ctx = plot.getContext('2d')
  ctx.clearRect(0, 0, plot.width, plot.height)
  $('review').innerHTML = ''
  if (!obj || !obj.summary) { $('details').textContent = obj ? `${obj.name}: not segmented yet` : ''; return }
  const s = obj.summary
  const size = s.volume_ml !== null ? `${s.volume_ml.toFixed(1)} mL` : `${s.area_pixels} pixels`
  $('details').textContent = `${obj.name}: ${size}, slices ${s.first_slice}-${s.last_slice}, mean confidence ${(s.mean_confidence ?? 0).toFixed(2)}`
  const n = state.session.frames[0]
  const w = plot.width / Math.max(n, 1)
  ctx.strokeStyle = '#555'; ctx.beginPath(); const y05 = plot.height * (1 - state.info.low_confidence); ctx.moveTo(0, y05); ctx.lineTo(plot.width, y05); ctx.stroke()
  const [r, g, b] = colour(obj.label)
  for (const [slice, value] of Object.entries(s.confidence_per_slice)) {
    ctx.fillStyle = value < state.info.low_confidence ? '#f0c060' : `rgb(${r},${g},${b})`
    ctx.fillRect(Number(slice) * w, plot.height * (1 - value), Math.max(w - 1, 1), plot.height * value)
  }
  plot.onclick = (event) => goToSlice(Math.min(n - 1, Math.floor(event.offsetX / w)))
  const review = s.review_slices || s.low_confidence_slices
  if (review.length) {
    $('review').append('review: ')
    for (const slice of review) {
      const link = document.createElement('a'); link.onclick = () => goToSlice(slice)
      const gap = (s.gap_slices || []).includes(slice)
      link.textContent = gap ? `${slice} (gap)` : String(slice)
      if (gap) link.className = 'gap'
      $('review').append(link)
    }
  }
  $('review').dataset.slices = review.join(',')
}
function applySummary(summary) {
  for (const obj of state.objects.values()) { obj.summary = null; obj.pending = summary.pending.includes(obj.label) }
  for (const s of summary.objects) {
    const obj = state.objects.get(s.label) || { label: s.label, name: s.name || `object ${s.label}` }
    obj.summary = s
    obj.pending = false
    if (s.name) obj.name = s.name  // a rename undone or redone
    state.objects.set(s.label, obj)
  }
  $('warnings').innerHTML = ''
  for (const text of summary.warnings || []) { const li = document.createElement('li'); li.textContent = text; $('warnings').append(li) }
  renderObjects()
}

// -- the label overlay -----------------------------------------------------------------------
function labelColours() {
  // the objects' colours as a NiiVue label colour map (hidden objects transparent)
  const labels = [0, ...[...state.objects.keys()].sort((a, b) => a - b)]
  const cm = { R: [], G: [], B: [], A: [], I: labels, labels: labels.map((l) => (l ? state.objects.get(l).name : '')) }
  for (const l of labels) { const [r, g, b] = l ? colour(l) : [0, 0, 0]; cm.R.push(r); cm.G.push(g); cm.B.push(b); cm.A.push(l && !state.hidden.has(l) ? 255 : 0) }
  return cm
}
function refreshColours() {
  if (!state.overlay) return
  state.overlay.setColormapLabel(labelColours())
  nv.updateGLVolume()
  study.mirrorLabels()
}
async function reloadOverlay() {
  const url = `/api/sessions/${state.session.session}/labels?format=nii.gz`
  const overlay = await NVImage.loadFromUrl({ url, headers: headers(), name: 'labels.nii.gz', opacity: Number($('opacity').value) / 100 })
  if (state.overlay) nv.removeVolume(state.overlay)
  state.overlay = overlay
  state.labels = overlay.img.slice() // the label map itself; the overlay shows it, or its outlines
  nv.addVolume(overlay)
  showOutline(false)
  refreshColours()
}
function showOutline(redraw = true) {
  // outline mode: the overlay keeps only each object's edge in the session's slice plane (the
  // label map, state.labels, is untouched: painting, the read-out and saving use it)
  const img = state.overlay.img
  const labels = state.labels
  if (!$('outline').checked) img.set(labels)
  else {
    const [nx, ny] = dims(); const size = [nx, ny, labels.length / (nx * ny)]; const stride = [1, nx, nx * ny]
    const a = state.session.frame_axes
    const [sx, sy] = [stride[a.x], stride[a.y]]; const [mx, my] = [size[a.x], size[a.y]]
    for (let p = 0; p < labels.length; p++) {
      const l = labels[p]
      if (!l) { img[p] = 0; continue }
      const cx = Math.floor(p / sx) % mx; const cy = Math.floor(p / sy) % my
      const inside = cx > 0 && cx < mx - 1 && cy > 0 && cy < my - 1 &&
        labels[p - sx] === l && labels[p + sx] === l && labels[p - sy] === l && labels[p + sy] === l
      img[p] = inside ? 0 : l
    }
  }
  if (redraw) { nv.updateGLVolume(); study.mirrorLabels() }
  document.body.dataset.outline = $('outline').checked ? '1' : '0'
}
let pendingRedraw = null
function paintSlice(label, slice, rle) {
  const img = state.labels
  const [rows, cols] = state.session.frames.slice(1)
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) { const i = nativeIndex(fromFrame(slice, x, y)); if (img[i] === label) img[i] = 0 }
  }
  for (let r = 0; r < rle.length; r += 2) {
    for (let p = rle[r]; p < rle[r] + rle[r + 1]; p++) img[nativeIndex(fromFrame(slice, p % cols, Math.floor(p / cols)))] = label
  }
  if (!pendingRedraw) pendingRedraw = setTimeout(() => { pendingRedraw = null; showOutline() }, 150)
}
function sliceMask(label, slice) {
  const [rows, cols] = state.session.frames.slice(1)
  const mask = new Uint8Array(rows * cols)
  const img = state.labels
  for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) mask[y * cols + x] = img[nativeIndex(fromFrame(slice, x, y))] === label ? 1 : 0
  return mask
}
function maskPng(mask) {
  const [rows, cols] = state.session.frames.slice(1)
  const canvas = document.createElement('canvas'); canvas.width = cols; canvas.height = rows
  const ctx = canvas.getContext('2d')
  const image = ctx.createImageData(cols, rows)
  for (let p = 0; p < rows * cols; p++) { const v = mask[p] ? 255 : 0; image.data.set([v, v, v, 255], p * 4) }
  ctx.putImageData(image, 0, 0)
  return canvas.toDataURL('image/png')
}

// -- prompts ---------------------------------------------------------------------------------
function selectedObject() {
  if (state.selected === null || !state.objects.has(state.selected)) addObject($('newName').value.trim())
  return state.objects.get(state.selected)
}
async function sendPrompt(kind, payload) {
  const obj = selectedObject()
  const segmented = obj.summary !== null && obj.summary !== undefined
  const sid = state.session.session
  const mark = kind === 'box' ? { slice: payload.slice, box: payload.box } : null
  if (!segmented) {
    try {
      await api('POST', `/api/sessions/${sid}/objects/${obj.label}/prompts`, { [kind]: payload, name: obj.name })
    } catch (error) { redrawMarks(); throw error }
    recordStep(mark)
    obj.pending = true
    renderObjects()
    status(`${obj.name}: ${kind} on slice ${payload.slice} added; press Propagate`)
    return
  }
  status(`${obj.name}: correcting slice ${payload.slice}...`)
  let last
  try {
    const response = await api('POST', `/api/sessions/${sid}/objects/${obj.label}/corrections`, { [kind]: payload })
    last = await streamLines(response, (line) => { if (line.total) setProgress(line.done, line.total) })
  } catch (error) { redrawMarks(); throw error }
  recordStep(mark)
  await reloadOverlay()
  applySummary(last)
  const c = last.correction
  status(`${obj.name}: slice ${c.slice} corrected; ${c.decoded_slices.length} slices decoded again in ${c.seconds.toFixed(1)} s`)
}
function setProgress(done, total) { $('progress').max = total; $('progress').value = done }

nv.onDragRelease = (info) => {
  if (!state.session || state.tool !== 'box') return
  const a = toFrame(rasToNative(info.voxStart)); const b = toFrame(rasToNative(info.voxEnd))
  if (a.slice !== b.slice) { status(`draw the box on a slice of the ${state.session.axis} axis (that view's plane)`, true); return }
  if (a.x === b.x || a.y === b.y) { status('drag a box, not a line or a click', true); return }
  const box = [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)]
  markBox(a.slice, box)
  guarded(() => sendPrompt('box', { slice: a.slice, box }))
}
nv.onMouseUp = () => {
  if (state.tool === 'window') showWindow()  // NiiVue's windowing drag reports no intensity change
  if (!state.session || (state.tool !== 'plus' && state.tool !== 'minus')) return
  const frame = toFrame(crosshairNative())
  guarded(() => sendPrompt('point', { slice: frame.slice, point: [frame.x, frame.y], positive: state.tool === 'plus' }))
}
nv.onLocationChange = (data) => showLocation(data)
nv.onIntensityChange = () => showWindow()
nv.onDrawingChanged = (action) => {
  if (action !== 'draw' || !state.session || (state.tool !== 'paint' && state.tool !== 'erase')) return
  const drawn = nv.drawBitmap
  const [rows, cols] = state.session.frames.slice(1)
  const strokes = new Map() // slice -> mask
  for (let p = 0; p < drawn.length; p++) {
    if (drawn[p] !== 1 && drawn[p] !== 2) continue
    const f = toFrame(rasToNative(rasFromIndex(p)))
    if (!strokes.has(f.slice)) strokes.set(f.slice, new Uint8Array(rows * cols))
    strokes.get(f.slice)[f.y * cols + f.x] = 1
  }
  redrawMarks() // the stroke goes; the boxes drawn stay
  if (strokes.size !== 1) { status(`paint on one slice of the ${state.session.axis} axis (that view's plane)`, true); return }
  const [slice, painted] = [...strokes.entries()][0]
  if (state.tool === 'paint' && $('paintThreshold').checked && !withinThreshold(slice, painted)) {
    status(`nothing painted: no voxel of the stroke lies within ${$('thresholdLow').value}..${$('thresholdHigh').value}`, true); return
  }
  const obj = selectedObject()
  if ($('brush3d').checked) { guarded(() => paintSphere(obj, slice, painted)); return }
  if (state.tool === 'erase') { guarded(() => sendPrompt('erase', { slice, png_base64: maskPng(painted) })); return }
  const current = obj.summary ? sliceMask(obj.label, slice) : new Uint8Array(rows * cols)
  for (let p = 0; p < painted.length; p++) if (painted[p]) current[p] = 1
  guarded(() => sendPrompt('mask', { slice, png_base64: maskPng(current) }))
}
async function paintSphere(obj, slice, painted) {
  // the 3D brush: the stroke's voxels within the brush's radius (half the pen's square side, in the
  // slice's finer spacing) on this slice and those above and below; nothing propagates
  const a = state.session.frame_axes; const spacing = state.session.spacing_xyz
  const radiusMm = (Math.floor(brushSize() / 2) + 0.5) * Math.min(spacing[a.x], spacing[a.y])
  const erase = state.tool === 'erase'
  const within = !erase && $('paintThreshold').checked ? [Number($('thresholdLow').value), Number($('thresholdHigh').value)] : null
  const body = { slice, png_base64: maskPng(painted), radius_mm: radiusMm, erase, within, name: obj.name }
  const b = (await objectStep(obj, 'POST', 'brush', body)).brush
  status(`${obj.name}: ${b.changed_voxels} voxels ${erase ? 'erased' : 'painted'} on slices ${b.changed_slices[0]}-${b.changed_slices.at(-1)} (3D brush, ${radiusMm.toFixed(1)} mm)`)
  document.body.dataset.brushSlices = b.changed_slices.join(',')
}
function withinThreshold(slice, painted) {
  // threshold-limited painting: keep only the stroke's voxels whose intensity is within the range
  const v = nv.volumes[0]
  const slope = v.hdr.scl_slope || 1; const inter = v.hdr.scl_inter || 0
  const low = Number($('thresholdLow').value); const high = Number($('thresholdHigh').value)
  const cols = state.session.frames[2]
  let kept = 0
  for (let p = 0; p < painted.length; p++) {
    if (!painted[p]) continue
    const value = v.img[nativeIndex(fromFrame(slice, p % cols, Math.floor(p / cols)))] * slope + inter
    if (value >= low && value <= high) kept++; else painted[p] = 0
  }
  return kept > 0
}
function readLabelNames(text) {
  // ITK-SNAP's label description (.label.txt): IDX R G B A VIS MSH "LABEL" per line
  const names = new Map()
  for (const line of text.split(/\r?\n/)) {
    const m = line.match(/^\s*(\d+)\s+\d+\s+\d+\s+\d+\s+[\d.]+\s+\d+\s+\d+\s+"(.*)"\s*$/)
    if (m && Number(m[1]) > 0 && m[2].trim()) names.set(Number(m[1]), m[2].trim())
  }
  return names
}
async function importLabelNames(file) {
  const names = readLabelNames(await file.text())
  if (!names.size) { status(`${file.name} names no label (ITK-SNAP's .label.txt: IDX R G B A VIS MSH "NAME" per line)`, true); return }
  for (const [label, name] of names) {
    const obj = state.objects.get(label)
    if (obj && onServer(obj)) {
      applySummary(await (await api('PATCH', `/api/sessions/${state.session.session}/objects/${label}`, { name })).json())
      pushHistory()
    } else if (obj) obj.name = name
    else state.objects.set(label, { label, name, summary: null, pending: false })  // ready for its first prompt
  }
  renderObjects(); refreshColours()
  status(`${file.name}: ${names.size} label name${names.size === 1 ? '' : 's'} taken`)
  document.body.dataset.labelNames = [...names.keys()].join(',')
}
function markBox(slice, box, refresh = true) {
  // the box outline in NiiVue's drawing layer (value 3), cleared by the next propagation
  const bitmap = nv.drawBitmap
  if (!bitmap) return
  const set = (x, y) => { bitmap[rasIndex(nativeToRas(fromFrame(slice, x, y)))] = 3 }
  for (let x = box[0]; x <= box[2]; x++) { set(x, box[1]); set(x, box[3]) }
  for (let y = box[1]; y <= box[3]; y++) { set(box[0], y); set(box[2], y) }
  if (refresh) nv.refreshDrawing(true)
}
function redrawMarks() {
  // the drawing layer holds exactly the boxes of state.marks (a failed or undone step leaves none behind)
  if (!nv.drawBitmap) return
  nv.drawBitmap.fill(0)
  for (const m of state.marks) markBox(m.slice, m.box, false)
  nv.refreshDrawing(true)
  document.body.dataset.marks = String(state.marks.length)
}
function pushHistory() {
  // a step the server made: an undo goes back to the marks before it; the steps undone are forgotten
  state.markHistory.push(state.marks.slice())
  state.markFuture = []
}
function recordStep(mark) {
  pushHistory()
  if (mark) state.marks.push(mark)
  document.body.dataset.marks = String(state.marks.length)
}
function setTool(tool) {
  state.tool = tool
  for (const button of document.querySelectorAll('#tools button')) button.classList.toggle('active', button.dataset.tool === tool)
  const drawing = tool === 'paint' || tool === 'erase'
  nv.setDrawingEnabled(drawing)
  if (drawing) { nv.setPenValue(tool === 'paint' ? 1 : 2, false); nv.opts.penSize = brushSize() }
  const primary = tool === 'box' ? DRAG_MODE.callbackOnly : tool === 'window' ? DRAG_MODE.windowing : DRAG_MODE.crosshair
  nv.setMouseEventConfig({ leftButton: { primary, withCtrl: DRAG_MODE.crosshair }, rightButton: DRAG_MODE.pan, centerButton: DRAG_MODE.pan })
}

function brushSize() { return Math.max(1, Math.min(40, Math.round(Number($('brushSize').value) || 3))) }
function setBrushSize(size) {
  $('brushSize').value = String(Math.max(1, Math.min(40, size)))
  nv.opts.penSize = brushSize()
  document.body.dataset.brush = String(brushSize())
}

// -- propagate, undo, save -------------------------------------------------------------------
async function propagate() {
  const sid = state.session.session
  nv.drawBitmap?.fill(0); nv.refreshDrawing(true)
  status('propagating...')
  const began = performance.now()
  const response = await api('POST', `/api/sessions/${sid}/propagate`, { masks: true })
  const last = await streamLines(response, (line) => {
    if (line.total) { setProgress(line.done, line.total); if (line.rle) paintSlice(line.label, line.slice, line.rle); status(`propagating: label ${line.label}, slice ${line.slice}`) }
  })
  pushHistory(); state.marks = []; redrawMarks()
  await reloadOverlay()
  applySummary(last)
  status(`propagated in ${((performance.now() - began) / 1000).toFixed(1)} s`)
  document.body.dataset.propagated = String(Number(document.body.dataset.propagated || 0) + 1)
}
async function openLabelMap(file) {
  if (!state.session) { status('open a scan first, then the label map that goes with it', true); return }
  status(`opening ${file.name} onto the scan...`)
  const form = new FormData()
  form.append('file', file)
  const answer = await (await api('POST', `/api/sessions/${state.session.session}/labels`, form)).json()
  for (const s of answer.objects) if (!state.objects.has(s.label)) state.objects.set(s.label, { label: s.label, name: s.name || `object ${s.label}` })
  pushHistory()
  await reloadOverlay()
  applySummary(answer)
  status(`${file.name}: labels ${answer.opened.join(', ')} opened; correct any slice, or erase`)
  document.body.dataset.openedLabels = answer.opened.join(',')
}
async function undo() {
  const response = await api('POST', `/api/sessions/${state.session.session}/undo`)
  state.markFuture.push(state.marks)
  state.marks = state.markHistory.pop() || []
  redrawMarks()  // what the step drew goes from every view
  applySummary(await response.json())
  await reloadOverlay()
  status('undone (Ctrl+Shift+Z redoes)')
  document.body.dataset.undone = String(Number(document.body.dataset.undone || 0) + 1)
}
async function redo() {
  const response = await api('POST', `/api/sessions/${state.session.session}/redo`)
  state.markHistory.push(state.marks)
  state.marks = state.markFuture.pop() || []
  redrawMarks()
  applySummary(await response.json())
  await reloadOverlay()
  status('redone')
  document.body.dataset.redone = String(Number(document.body.dataset.redone || 0) + 1)
}
async function learn() {
  const obj = segmentedSelection('select a segmented object with two or more corrected slices')
  if (!obj) return
  status(`${obj.name}: learning from its corrected slices...`)
  const a = (await objectStep(obj, 'POST', 'adapt')).adapt
  status(`${obj.name}: learned from slices ${a.slices_learned.join(', ')}; ${a.decoded_slices} slices decoded again in ${a.seconds.toFixed(1)} s`)
}
async function fillBetween() {
  const obj = state.objects.get(state.selected)
  if (!obj || !onServer(obj)) { status('select an object drawn (or segmented) on two or more slices', true); return }
  status(`${obj.name}: filling between its slices...`)
  const f = (await objectStep(obj, 'POST', 'fill')).fill
  status(`${obj.name}: filled slices ${f.filled_slices.join(', ')} between its slices`)
  document.body.dataset.filled = f.filled_slices.join(',')
}
async function removeIslands() {
  const obj = segmentedSelection()
  if (!obj) return
  const i = (await objectStep(obj, 'POST', 'islands', {})).islands
  status(`${obj.name}: ${i.removed_islands} island${i.removed_islands === 1 ? '' : 's'} removed (${i.removed_voxels} voxels); the largest kept`)
  document.body.dataset.islandsRemoved = String(i.removed_islands)
}
async function fuseViews() {
  const obj = segmentedSelection()
  if (!obj) return
  status(`${obj.name}: propagating along the two other axes...`)
  const m = (await objectStep(obj, 'POST', 'multiview')).multiview
  status(`${obj.name}: fused with ${m.axes.join(' and ')} passes in ${m.seconds.toFixed(1)} s (${m.added_voxels} voxels added, ${m.removed_voxels} removed)`)
  document.body.dataset.multiview = `${m.added_voxels},${m.removed_voxels}`
}
async function smoothObject() {
  const obj = segmentedSelection()
  if (!obj) return
  const method = $('smoothMethod').value
  const m = (await objectStep(obj, 'POST', 'smooth', { method })).smooth
  status(`${obj.name}: ${method} smoothing changed ${m.changed_slices} slices (${m.added_voxels} voxels added, ${m.removed_voxels} removed)`)
  document.body.dataset.smoothed = `${m.added_voxels},${m.removed_voxels}`
}
async function download(path, filename) {
  const response = await api('GET', path)
  const blob = await response.blob()
  const link = document.createElement('a')
  link.href = URL.createObjectURL(blob); link.download = filename
  document.body.append(link); link.click(); link.remove()
  setTimeout(() => URL.revokeObjectURL(link.href), 10000)
}
function stem() { return state.session.name.replace(/(\.nii\.gz|\.[^.]*)$/i, '') }
const DICOM_FORMATS = { 'dicom-seg': 'seg.dcm', rtstruct: 'rtstruct.dcm' }
async function save() {
  const format = $('saveFormat').value
  const name = `${stem()}_${DICOM_FORMATS[format] || `labels.${format}`}`
  await download(`/api/sessions/${state.session.session}/labels?format=${format}`, name)
  status(`saved ${name}`)
}
async function pushToPacs() {
  const format = $('saveFormat').value === 'rtstruct' ? 'rtstruct' : 'dicom-seg'
  const answer = await (await api('POST', `/api/sessions/${state.session.session}/push`, { format })).json()
  status(`stored a ${format === 'rtstruct' ? 'RT-STRUCT' : 'DICOM SEG'} on the PACS (SOP Instance UID ${answer.stored})`)
  document.body.dataset.pushed = answer.stored
}
function offerFormats() {
  // the DICOM formats reference the input's instances: offered only for a DICOM input
  const select = $('saveFormat'); const chosen = select.value; select.innerHTML = ''
  for (const f of state.info.label_formats) if (!DICOM_FORMATS[f] || (state.session && state.session.dicom)) select.add(new Option(f, f))
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen
  $('pushPacs').hidden = !(state.session && state.session.pacs)
}

// -- opening a scan --------------------------------------------------------------------------
async function openScan(response) {
  if (state.session) api('DELETE', `/api/sessions/${state.session.session}`).catch(() => {})
  state.session = await response.json()
  state.objects.clear(); state.selected = null; state.overlay = null; state.marks = []; state.markHistory = []; state.markFuture = []
  state.hidden.clear()
  study.reset()
  await nv.loadVolumes([{ url: `/api/sessions/${state.session.session}/volume`, headers: headers(), name: 'volume.nii.gz' }])
  const back = nv.volumes[0]
  back.cal_min = state.session.window.low; back.cal_max = state.session.window.high
  showWindow()
  nv.createEmptyDrawing()
  await reloadOverlay()
  const presets = $('displayWindow'); presets.innerHTML = ''
  for (const [name, range] of Object.entries(state.session.window_presets)) presets.add(new Option(`${name} [${range[0]}, ${range[1]}]`, name))
  const view = { k: 'axial', j: 'coronal', i: 'sagittal' }[state.session.voxel_axis]
  setView(state.session.is_2d ? 'axial' : view)
  goToSlice(Math.floor(state.session.frames[0] / 2))
  renderObjects()
  offerFormats()
  if (state.session.summary) {  // a project case opened with saved labels: its objects, ready to correct
    for (const s of state.session.summary.objects) state.objects.set(s.label, { label: s.label, name: s.name || `object ${s.label}` })
    applySummary(state.session.summary); refreshColours()
    status(`opened ${state.session.name} with its saved v${state.session.shown}: correct a slice, or Save draft / Finish`)
  } else {
    status(`opened ${state.session.name}: ${state.session.frames[0]} slices along ${state.session.axis}; draw a box on the structure's slice`)
  }
  document.body.dataset.shown = state.session.shown ?? ''
  document.body.dataset.session = state.session.session
}
// -- autosaves (serve --save-dir, or --project) and the idle warning --------------------------
async function refreshAutosaves() {
  const listed = (await (await api('GET', '/api/autosaves')).json()).autosaves
  const select = $('autosaveList'); select.innerHTML = ''
  select.add(new Option('saved work...', ''))
  for (const a of listed) {
    const when = new Date(a.saved * 1000).toLocaleString()
    select.add(new Option(`${a.name}${a.case ? ' (' + a.case + ')' : ''} · ${a.objects.length} object${a.objects.length === 1 ? '' : 's'} · ${when}`, a.key))
  }
  document.body.dataset.autosaves = String(listed.length)
}
async function reopenAutosave(key) {
  status('opening the saved work...')
  await openScan(await api('POST', `/api/autosaves/${encodeURIComponent(key)}/sessions`))
  status(`reopened ${state.session.name} as it was saved: correct any slice, or save`)
}
function watchIdle() {
  // a warning before the server closes an idle session (its labels are autosaved where it keeps them)
  const idle = state.info.limits.session_idle_minutes * 60000
  const warnAt = idle - Math.min(120000, idle / 2)
  setInterval(() => {
    if (!state.session || Date.now() - lastActivity < warnAt) return
    const left = Math.max(0, Math.round((idle - (Date.now() - lastActivity)) / 1000))
    $('expiry').textContent = left > 0
      ? `This session closes after ${Math.round(idle / 60000 * 10) / 10} min without a request: in about ${left} s. ` + (state.info.autosave ? 'Its labels are autosaved: Saved work reopens them.' : 'Save your labels.')
      : 'This session was closed for being idle.' + (state.info.autosave ? ' Saved work reopens its labels.' : '')
    $('expiry').hidden = false
    document.body.dataset.expiryWarning = '1'
  }, Math.min(15000, Math.max(500, idle / 10)))
}

// -- the project (serve --project) ----------------------------------------------------------
async function refreshProject() {
  const project = await (await api('GET', '/api/project')).json()
  const list = $('caseList'); const chosen = list.value; list.innerHTML = ''
  for (const c of project.cases) {
    const who = c.latest ? ` v${c.latest.version}${c.latest.user ? ' ' + c.latest.user : ''}${c.latest.conflict ? ' (conflict)' : ''}` : ''
    list.add(new Option(`${c.case} · ${c.status}${who}`, c.case))
  }
  if (chosen) list.value = chosen
  const done = project.counts.by_status.final
  $('trainState').textContent = ` ${done}/${project.counts.cases} final · model ${project.active_model} · training ${project.training}`
  $('trainState').dataset.training = project.training
  if (project.training === 'running') setTimeout(() => refreshProject().catch(() => {}), 5000)
  return project
}
async function listVersions(caseId) {
  const select = $('caseVersion')
  while (select.options.length > 2) select.remove(2)
  if (!caseId) return
  const listed = (await (await api('GET', `/api/project/cases/${encodeURIComponent(caseId)}/versions`)).json()).versions
  for (const v of listed.slice().reverse()) select.add(new Option(`v${v.version} ${v.status}${v.user ? ' ' + v.user : ''}${v.conflict ? ' (conflict)' : ''}`, String(v.version)))
}
async function openCase(caseId, version = null) {
  status(`opening ${caseId}...`)
  const body = { axis: $('axis').value, window: $('window').value }
  if (version !== null) body.version = version
  await openScan(await api('POST', `/api/project/cases/${encodeURIComponent(caseId)}/sessions`, body))
  $('caseList').value = caseId
  await listVersions(caseId)
  document.body.dataset.case = caseId
}
async function nextCase() {
  const skip = state.session && state.session.case ? state.session.case : ''
  const params = new URLSearchParams({ strategy: $('strategy').value, skip })
  const next = await (await api('GET', `/api/project/next?${params}`)).json()
  if (!next.case) { status('every case of the project is final'); return }
  await openCase(next.case)
}
async function saveToProject(caseStatus) {
  if (!state.session || !state.session.case) { status('open a case of the project first (Open case or Next case)', true); return }
  const saved = await (await api('POST', `/api/sessions/${state.session.session}/project`, { status: caseStatus })).json()
  const conflict = saved.conflict ? ` (someone saved this case meanwhile: kept as a conflict, based on v${saved.based_on ?? '-'})` : ''
  status(`${saved.case}: saved v${saved.version} as ${saved.status}${conflict}${saved.training_started ? '; training started' : ''}`)
  await refreshProject()
}
async function startTraining() {
  await api('POST', '/api/project/train')
  status('training started in the background; annotation goes on')
  await refreshProject()
}
function openForm(file) {
  const form = new FormData()
  form.append('file', file)
  form.append('axis', $('axis').value); form.append('window', $('window').value)
  return form
}
function setView(view) {
  const types = { axial: SLICE_TYPE.AXIAL, coronal: SLICE_TYPE.CORONAL, sagittal: SLICE_TYPE.SAGITTAL, multi: SLICE_TYPE.MULTIPLANAR, render: SLICE_TYPE.RENDER }
  nv.setSliceType(types[view])
  study.setSliceType(types[view])
  for (const button of document.querySelectorAll('#viewToolbar button[data-view]')) button.classList.toggle('active', button.dataset.view === view)
}

async function start() {
  await nv.attachToCanvas($('gl'))
  nv.setCrosshairWidth(1)
  nv.setCrosshairColor([1, 1, 0, 0.5])
  setTool('box')
  try {
    state.info = await (await api('GET', '/api/info')).json()
  } catch (error) { status(error.message, true); return }
  $('serverInfo').textContent = `medsam2 ${state.info.version} · ${state.info.backbone} (${state.info.runtime}, ${state.info.precision}, ${state.info.device})`
  for (const axis of state.info.axes) $('axis').add(new Option(axis, axis))
  for (const w of state.info.windows) $('window').add(new Option(w, w))
  offerFormats()
  if (state.info.data_folder) {
    const scans = (await (await api('GET', '/api/data')).json()).scans
    for (const scan of scans) $('dataList').add(new Option(`${scan.path}${scan.kind === 'dicom' ? ' (DICOM)' : ''}`, scan.path))
  }
  if (state.info.dicomweb) {
    $('pacsBox').hidden = false
    try {
      const listed = (await (await api('GET', '/api/dicomweb')).json()).series
      for (const s of listed) {
        const label = [s.patient, s.study_date, s.modality, s.series_description || s.study_description, s.instances ? `${s.instances} images` : ''].filter(Boolean).join(' · ')
        $('pacsList').add(new Option(label, JSON.stringify({ study: s.study_uid, series: s.series_uid })))
      }
    } catch (error) { status(error.message, true) }
  }
  if (state.info.project) {
    $('projectBox').hidden = false
    try {
      const project = await refreshProject()
      for (const s of project.strategies) $('strategy').add(new Option(s, s))
    } catch (error) { status(error.message, true) }
  }
  if (state.info.autosave) { $('autosaveBox').hidden = false; await refreshAutosaves().catch(() => {}) }
  watchIdle()
  document.body.dataset.ready = '1'
}

$('upload').onchange = (event) => { const file = event.target.files[0]; if (file) guarded(async () => { status(`uploading ${file.name}...`); await openScan(await api('POST', '/api/sessions', openForm(file))) }) }
$('openData').onclick = () => { const path = $('dataList').value; if (path) guarded(async () => openScan(await api('POST', '/api/sessions', { path, axis: $('axis').value, window: $('window').value }))) }
$('openPacs').onclick = () => { const chosen = $('pacsList').value; if (chosen) guarded(async () => { status('retrieving the series from the PACS...'); await openScan(await api('POST', '/api/sessions', { dicomweb: JSON.parse(chosen), axis: $('axis').value, window: $('window').value })) }) }
$('pushPacs').onclick = () => guarded(pushToPacs)
$('openCase').onclick = () => { const chosen = $('caseList').value; const version = $('caseVersion').value; if (chosen) guarded(() => openCase(chosen, version === '' ? null : Number(version))) }
$('caseList').onchange = () => guarded(() => listVersions($('caseList').value))
$('nextCase').onclick = () => guarded(nextCase)
$('openAutosave').onclick = () => { const key = $('autosaveList').value; if (key) guarded(() => reopenAutosave(key)) }
$('autosaveList').onfocus = () => refreshAutosaves().catch(() => {})
$('saveDraft').onclick = () => guarded(() => saveToProject('draft'))
$('finishCase').onclick = () => guarded(() => saveToProject('final'))
$('train').onclick = () => guarded(startTraining)
$('openLabels').onclick = () => $('labelFile').click()
$('labelFile').onchange = (event) => { const file = event.target.files[0]; event.target.value = ''; if (file) guarded(() => openLabelMap(file)) }
$('addObject').onclick = () => { addObject($('newName').value.trim()); $('newName').value = '' }
$('propagate').onclick = () => guarded(propagate)
$('undo').onclick = () => guarded(undo)
$('redo').onclick = () => guarded(redo)
$('fillBetween').onclick = () => guarded(fillBetween)
$('removeIslands').onclick = () => guarded(removeIslands)
$('smooth').onclick = () => guarded(smoothObject)
$('multiview').onclick = () => guarded(fuseViews)
$('openLabelNames').onclick = () => $('labelNamesFile').click()
$('labelNamesFile').onchange = (event) => { const file = event.target.files[0]; event.target.value = ''; if (file) guarded(() => importLabelNames(file)) }
$('paintThreshold').onchange = () => {
  if ($('paintThreshold').checked && $('thresholdLow').value === '' && nv.volumes[0]) {  // start from the display window
    $('thresholdLow').value = String(Math.round(nv.volumes[0].cal_min)); $('thresholdHigh').value = String(Math.round(nv.volumes[0].cal_max))
  }
}
$('renameObject').onclick = () => guarded(renameObject)
$('deleteObject').onclick = () => guarded(deleteObject)
$('brushSize').onchange = () => setBrushSize(brushSize())
$('opacity').oninput = () => { if (state.overlay) { state.overlay.opacity = Number($('opacity').value) / 100; nv.updateGLVolume(); study.mirrorLabels() } document.body.dataset.opacity = $('opacity').value }
$('addImage').onclick = () => { if (state.session) $('imageFile').click(); else status('open a scan first', true) }
$('imageFile').onchange = () => { const file = $('imageFile').files[0]; $('imageFile').value = ''; if (file) guarded(() => study.add(file)) }
$('secondShown').onchange = () => guarded(() => study.show(Number($('secondShown').value), $('secondMode').value))
$('secondMode').onchange = () => guarded(() => study.show(study.shown, $('secondMode').value))
$('blend').oninput = () => study.setBlend(Number($('blend').value))
$('modelInput').onchange = () => guarded(() => study.chooseModelInput(Number($('modelInput').value)))
$('outline').onchange = () => { if (state.overlay) showOutline() }
$('learn').onclick = () => guarded(learn)
$('save').onclick = () => guarded(save)
$('saveReport').onclick = () => guarded(() => download(`/api/sessions/${state.session.session}/report`, `${stem()}_report.json`))
$('saveKey').onclick = () => { state.key = $('apiKey').value; sessionStorage.setItem('medsam2-key', state.key); $('keyBox').hidden = true; start() }
$('helpButton').onclick = $('closeHelp').onclick = () => { $('help').hidden = !$('help').hidden }
$('displayWindow').onchange = () => { const [lo, hi] = state.session.window_presets[$('displayWindow').value]; nv.volumes[0].cal_min = lo; nv.volumes[0].cal_max = hi; nv.updateGLVolume(); showWindow() }
for (const button of document.querySelectorAll('#tools button')) button.onclick = () => setTool(button.dataset.tool)
for (const button of document.querySelectorAll('#viewToolbar button[data-view]')) button.onclick = () => setView(button.dataset.view)
document.addEventListener('keydown', (event) => {
  if (event.target.tagName === 'INPUT' || event.target.tagName === 'SELECT') return
  const keys = { b: 'box', a: 'plus', d: 'minus', p: 'paint', e: 'erase', n: 'navigate', w: 'window' }
  const key = event.key.toLowerCase()
  if (event.ctrlKey && (key === 'y' || (key === 'z' && event.shiftKey))) { event.preventDefault(); guarded(redo) }
  else if (event.ctrlKey && key === 'z') { event.preventDefault(); guarded(undo) }
  else if (event.key === '[' || event.key === ']') setBrushSize(brushSize() + (event.key === ']' ? 1 : -1))
  else if (key === 'f' && state.session) guarded(fillBetween)
  else if (keys[event.key]) setTool(keys[event.key])
  else if (event.key === 'Enter' && state.session) guarded(propagate)
  else if (event.key === 's' && state.session) guarded(save)
  else if (event.key === '?') $('help').hidden = !$('help').hidden
  else if (/^[1-9]$/.test(event.key) && state.objects.has(Number(event.key))) selectObject(Number(event.key))
  else if ((event.key === 'PageUp' || event.key === 'PageDown') && state.session) goToSlice(Math.max(0, Math.min(state.session.frames[0] - 1, state.sliceIndex + (event.key === 'PageUp' ? 1 : -1))))
})
window.medsam2.goToSlice = goToSlice
window.medsam2.study = study
start()
