// The study's other images (FLAIR beside T1c, PET over CT): added by upload (the server puts each
// on the scan's grid), shown beside the scan (a second view that follows the first: its slice,
// crosshair, zoom and the labels) or blended over it (the slider fades from the scan to the
// image), and chosen as what the model sees.
import { Niivue, NVImage } from './niivue.js'

export class StudyImages {
  // page: { nv, api, headers, status, session() (the session's info), labels() (the overlay shown, or null), colours() (its colour map) }
  constructor (page) {
    this.page = page
    this.images = [] // GET .../images: [{index, name, resampled, model_input, window_presets}]
    this.shown = 0 // the image shown beside or blended (0: none)
    this.mode = 'beside'
    this.side = null // the Niivue of the view beside
    this.sideLabels = null
    this.blended = null // the NVImage blended over the scan
  }

  reset (images = []) {
    // a new scan: no other image, nothing shown beside or blended
    this.images = images; this.shown = 0
    if (this.blended) { this.page.nv.removeVolume(this.blended); this.blended = null }
    this.hideSide()
    if (this.side && this.sideLabels) this.side.removeVolume(this.sideLabels)
    this.sideLabels = null
    delete document.body.dataset.secondShown
    this.render()
  }

  url (index) { return `/api/sessions/${this.page.session().session}/images/${index}` }

  async add (file) {
    if (!this.page.session()) { this.page.status('open a scan first, then add another image of its study', true); return }
    const form = new FormData(); form.append('file', file)
    this.page.status(`${file.name}: reading it onto the scan's grid...`)
    const answer = await (await this.page.api('POST', `/api/sessions/${this.page.session().session}/images`, form)).json()
    this.images = answer.images
    const added = this.images.at(-1)
    await this.show(added.index, this.mode)
    this.page.status(`${added.name} added${added.resampled ? ' (resampled onto the scan\'s grid)' : ''}: shown ${this.mode}; the model sees ${this.modelName()}`)
  }

  modelName () { return (this.images.find((i) => i.model_input) || { name: 'the scan' }).name }

  async show (index, mode) {
    this.shown = index; this.mode = mode
    if (this.blended) { this.page.nv.removeVolume(this.blended); this.blended = null }
    this.hideSide()
    if (index && mode === 'blended') await this.blend(index)
    if (index && mode === 'beside') await this.showSide(index)
    this.render()
    document.body.dataset.secondShown = index ? `${index}|${mode}` : ''
    if (index) this.page.status(`${this.images[index].name} shown ${mode === 'blended' ? 'blended over the scan (the slider fades to it)' : 'beside the scan'}`)
    else this.page.status('the scan alone')
  }

  async blend (index) {
    const nv = this.page.nv
    const image = await NVImage.loadFromUrl({ url: this.url(index), headers: this.page.headers(), name: `image${index}.nii.gz`, colormap: 'gray' })
    const [low, high] = this.displayWindow(index)
    image.cal_min = low; image.cal_max = high
    image.opacity = Number(document.getElementById('blend').value) / 100
    // under the labels: the scan, the image, then the labels on top
    const labels = this.page.labels()
    if (labels) nv.removeVolume(labels)
    nv.addVolume(image)
    if (labels) nv.addVolume(labels)
    this.blended = image
  }

  displayWindow (index) {
    // shown in its 0.5-99.5 percentiles, which suit an image of any modality
    const presets = this.images[index].window_presets
    return presets.percentile || Object.values(presets)[0]
  }

  setBlend (percent) {
    if (!this.blended) return
    this.blended.opacity = percent / 100
    this.page.nv.updateGLVolume()
    document.body.dataset.blend = String(percent)
  }

  async showSide (index) {
    const canvas = document.getElementById('gl2')
    canvas.hidden = false
    if (!this.side) {
      this.side = new Niivue({ backColor: [0, 0, 0, 1], crosshairWidth: 1, crosshairColor: [1, 1, 0, 0.6], dragAndDropEnabled: false, isColorbar: false })
      await this.side.attachToCanvas(canvas)
    }
    await this.side.loadVolumes([{ url: this.url(index), headers: this.page.headers(), name: `image${index}.nii.gz` }])
    const [low, high] = this.displayWindow(index)
    this.side.volumes[0].cal_min = low; this.side.volumes[0].cal_max = high
    this.sideLabels = null
    this.mirrorLabels()
    this.side.setSliceType(this.page.nv.opts.sliceType)
    this.page.nv.broadcastTo(this.side); this.side.broadcastTo(this.page.nv)
    this.side.updateGLVolume()
    this.follow()
    this.page.nv.resizeListener()
  }

  hideSide () {
    const canvas = document.getElementById('gl2')
    if (!this.side || canvas.hidden) return
    canvas.hidden = true
    this.page.nv.broadcastTo([]); this.side.broadcastTo([])
    this.page.nv.resizeListener()
  }

  mirrorLabels () {
    // the view beside shows the labels as the scan's view does (outlines, hidden objects, opacity)
    if (!this.side || document.getElementById('gl2').hidden) return
    const labels = this.page.labels()
    if (this.sideLabels && labels && this.sideLabels.img.length === labels.img.length) {
      // the same grid: copy the voxels into the view's own volume (no new volume while propagating)
      this.sideLabels.img.set(labels.img)
      this.sideLabels.opacity = labels.opacity
      this.sideLabels.setColormapLabel(this.page.colours())
      this.side.updateGLVolume()
      return
    }
    if (this.sideLabels) this.side.removeVolume(this.sideLabels)
    this.sideLabels = null
    if (!labels) return
    const copy = labels.clone()
    copy.opacity = labels.opacity
    copy.setColormapLabel(this.page.colours())
    this.side.addVolume(copy)
    this.sideLabels = copy
  }

  follow () {
    // the view beside goes where the scan's view goes (NiiVue's own sync only follows the mouse
    // in a focused canvas; the page also moves by the keyboard and the review links)
    if (!this.side || document.getElementById('gl2').hidden) return
    this.side.scene.crosshairPos = [...this.page.nv.scene.crosshairPos]
    this.side.scene.pan2Dxyzmm = [...this.page.nv.scene.pan2Dxyzmm]
    this.side.drawScene()
  }

  setSliceType (type) { if (this.side && !document.getElementById('gl2').hidden) this.side.setSliceType(type) }

  async chooseModelInput (index) {
    const answer = await (await this.page.api('PUT', `/api/sessions/${this.page.session().session}/model-input`, { image: index })).json()
    this.images = answer.images
    this.render()
    this.page.status(`the model sees ${this.modelName()} from now on (propagate or correct to use it; the answers so far stay)`)
  }

  render () {
    const many = this.images.length > 1
    for (const id of ['secondShown', 'secondMode', 'modelInputBox']) document.getElementById(id).hidden = !many
    document.getElementById('blend').hidden = !(many && this.mode === 'blended' && this.shown)
    const shown = document.getElementById('secondShown'); shown.innerHTML = ''
    shown.add(new Option('scan only', '0'))
    for (const i of this.images.slice(1)) shown.add(new Option(i.name, String(i.index)))
    shown.value = String(this.shown)
    document.getElementById('secondMode').value = this.mode
    const model = document.getElementById('modelInput'); model.innerHTML = ''
    for (const i of this.images) model.add(new Option(i.index ? i.name : `${i.name} (the scan)`, String(i.index)))
    const seen = this.images.find((i) => i.model_input)
    if (seen) model.value = String(seen.index)
    document.body.dataset.modelInput = seen ? String(seen.index) : '0'
  }
}
